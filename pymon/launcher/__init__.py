"""The launcher: what the engine executes as its conmon. It hands the invocation to a warm
monitor forked by `pymon-server` (`client`), or runs the cold path in this process
(`cold`). `pymon_launch.c` is the same launcher compiled, for start-up speed."""
