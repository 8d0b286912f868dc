"""The dispy client: clusters, jobs, and the engine thread that talks to nodes."""
