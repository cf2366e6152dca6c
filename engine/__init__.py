"""msgpolicy: was this seller-to-buyer message compliant on date X?

The Python API behind the `msgpolicy` command; it takes and returns pydantic models.
"""
from .check import check_log, load_log
from .evaluate import Judge, judge_records
from .model import BuyerEvent, Category, Finding, Message, Outcome, Verdict
from .policyfile import PolicyError, PolicySet, load_policies
from .timeline import in_force

__version__ = "0.1.0"

__all__ = [
    "BuyerEvent", "Category", "Finding", "Judge", "Message", "Outcome", "PolicyError", "PolicySet",
    "Verdict", "check_log", "in_force", "judge_records", "load_log", "load_policies", "__version__",
]
