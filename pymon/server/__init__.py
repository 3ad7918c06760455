"""`pymon-server`: a long-lived process that has imported and warmed everything once and
forks one monitor per request. It never runs a monitor itself, and it has no trio loop and
no thread when it forks."""
