"""The top of the import graph: the `lazarus` command line and the demo, which use both the
worker (`pipeline`) and the reprocessor (`reprocessor`)."""
