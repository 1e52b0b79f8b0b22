"""`demo:` the simulated Integrated Platform that `opsstack up` monitors by default."""
from stack.config import Field

SECTION = {
    "enabled": Field("bool", True, "run the demo platform and monitor it"),
    "seed": Field("int", 42),
    "time_acceleration": Field("float", 1.0, minimum=0.001, help="simulated seconds per real second"),
    "load": Field("bool", True, "run the built-in load generator"),
    # service -> {"admin": port, <region>: port}; filled in by `opsstack up` (leave empty)
    "ports": Field("dict", {}),
}
