"""The sandbox worker: standard library only, shipped into the sandbox as this directory.

Nothing here imports the project: the host starts the package inside the sandbox as the
top-level package ``worker`` (see ``sandbox.worker_command``), and imports the same modules as
``dreamprm_code.execution.worker`` for the wire format, the codec and the comparison rules.
"""
