"""Policy engine and identity directory: which actions need whose approval, and who is who."""

from pathlib import Path

from policies.directory import DEV_TOKENS, Directory, GroupTargets, StaticDirectory, hash_token
from policies.engine import Explanation, Policy, RuleTrace
from policies.loader import (
    PolicyError,
    check_groups,
    load_directory,
    load_policy,
    load_policy_and_directory,
)

# The example policy, directory and targets `signoff dev` runs with unless told otherwise.
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"

__all__ = [
    "DEV_TOKENS",
    "EXAMPLES_DIR",
    "Directory",
    "Explanation",
    "GroupTargets",
    "Policy",
    "PolicyError",
    "RuleTrace",
    "StaticDirectory",
    "check_groups",
    "hash_token",
    "load_directory",
    "load_policy",
    "load_policy_and_directory",
]
