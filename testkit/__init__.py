"""What the tests and the benchmarks share: a real daemon process and the one way to wait for
it (daemon_process.py), synthetic audio (audio_files.py), where the real resources are
(paths.py). A package of its own, not part of the tests: benchmarks import it too."""
