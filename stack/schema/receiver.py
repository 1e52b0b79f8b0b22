"""`receiver:` the Alertmanager webhook receiver (tickets)."""
from stack.config import Field

SECTION = {
    # Bearer token Alertmanager must send. null = generated on first `up` into <run_dir>/receiver_token.
    # OPSSTACK_RECEIVER_TOKEN overrides it.
    "token": Field("str", None, nullable=True),
    "workers": Field("int", 2, minimum=1),
    "max_body_bytes": Field("int", 1048576, minimum=1024),
}
