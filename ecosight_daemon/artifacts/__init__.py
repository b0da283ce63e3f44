"""The model as shipped: what a version folder holds and how it is run (file names, the
priority rule, a fitted head applied, the event detector's inference, loading a published
version). training/ writes it; detection, HTTP, review, the daemon and the version registry
read it."""
