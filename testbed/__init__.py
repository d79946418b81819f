"""The test bed shared by ``tests/`` and ``benchmarks/``: real services on loopback.

PostgreSQL with TLS (:mod:`.postgres`, fixtures in :mod:`.pg_fixtures`), the
Redshift stand-in (:mod:`.redshift_proxy`), an OpenSSH bastion (:mod:`.sshd`,
:mod:`.ssh_fixtures`), a test PKI (:mod:`.tls`), CPU load (:mod:`.cpu_load`),
fresh-process cycles (:mod:`.soak`) and settings factories (:mod:`.settings`).
Not part of the package (not in the wheel).
"""
