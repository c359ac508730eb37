"""`hone ui`: the whole path in a local web page (data doctor, advisor and plan, training runs,
comparison, side-by-side chat), a FastAPI app over hone's own functions. Training always runs
as a separate `hone train` process."""
