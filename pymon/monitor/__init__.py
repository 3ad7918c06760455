"""The monitor M, whichever way it was started (a cold fork of the launcher, or a fork of
`pymon-server`): `prepare` (argv, checks, the start pipe), `setup` (the runtime, up to the
pid message), `verdict` (what the runtime's exit means), `life` (the container's life under
trio, then the exit files)."""
