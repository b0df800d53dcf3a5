"""PyFlink jobs, one per folder: `build(t_env, settings, ...)` builds, `main(argv)` runs."""
