"""Past one machine: the folder job of ``u2bench predict`` on a Ray cluster (``--ray``).

:mod:`.predict` runs the job on Ray Data; :mod:`.loopback` starts a cluster of several Ray nodes on
127.0.0.1 inside a private network namespace, for the tests and the benchmark (tools/ray_speed.py).
Ray is an optional extra (``pip install -e '.[ray]'``); nothing else in the package imports it.
"""
