"""`forecast:` Prophet forecaster targets."""
from stack.config import Field

SECTION = {
    "enabled": Field("bool", False),
}
