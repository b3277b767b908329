"""Bundles for app teams: every artifact of one model in one folder with one manifest, one golden file and
a zip (``build``), and the runtime-only parity suite emitted into each bundle (``emitted_suite``, from the
template in ``resources/bundle_tests/``)."""
