"""Run the benchmarks against one stack: `python -m bench.run_all [--quick] [--only b1 b3]`.

Each benchmark module (b1_overhead, b2_approval, b3_pending, b4_audit, b5_ledger, b6_inbox,
b7_notify) can also run
alone with
`python -m bench.<module>`; it then starts its own stack.
"""

from __future__ import annotations

import argparse
import time
from types import ModuleType

from bench import (
    b1_overhead,
    b2_approval,
    b3_pending,
    b4_audit,
    b5_ledger,
    b6_inbox,
    b7_notify,
)
from bench.common import (
    Section,
    append_results,
    console,
    machine_info,
    running_stack,
    stack_options,
)
from workers import event_loop
from workers.settings import Settings

BENCHMARKS: dict[str, ModuleType] = {
    "b1": b1_overhead,
    "b2": b2_approval,
    "b3": b3_pending,
    "b4": b4_audit,
    "b5": b5_ledger,
    "b6": b6_inbox,
    "b7": b7_notify,
}


def parser_for(modules: list[ModuleType]) -> argparse.ArgumentParser:
    """Common options, the stack's, and those of each module."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and short runs, for development"
    )
    stack_options(parser)
    for module in modules:
        module.add_options(parser)
    return parser


async def run(names: list[str], args: argparse.Namespace, label: str) -> list[Section]:
    """Start one stack, run the named benchmarks on it in order, record the results."""
    info = machine_info()
    sections: list[Section] = []
    started = time.monotonic()
    # A benchmark may start a local fake (B7: Slack) the stack's processes must be pointed at.
    prepared = [BENCHMARKS[n] for n in names if hasattr(BENCHMARKS[n], "prepare")]
    for module in prepared:
        await module.prepare(args)
    async with running_stack(args, bare="b1" in names) as stack:
        for name in names:
            console.rule(f"{name.upper()}")
            try:
                produced = await BENCHMARKS[name].run(stack, args)
            except Exception as err:
                console.print_exception()
                produced = Section(title=f"{name.upper()} failed", columns=["error"])
                produced.rows.append([f"{type(err).__name__}: {err}"[:300]])
            for section in produced if isinstance(produced, list) else [produced]:
                section.print()
                sections.append(section)
    for module in prepared:
        await module.finish()
    info["wall time of the run"] = f"{time.monotonic() - started:.0f} s"
    append_results(sections, label=label + (" (quick)" if args.quick else ""), info=info)
    return sections


def standalone(name: str) -> None:
    """Entry point of one benchmark module run on its own."""
    args = parser_for([BENCHMARKS[name]]).parse_args()
    event_loop.run(run([name], args, label=name.upper()), Settings().event_loop)


def main() -> None:
    """All benchmarks (or --only some) against one stack."""
    parser = parser_for(list(BENCHMARKS.values()))
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), default=sorted(BENCHMARKS))
    args = parser.parse_args()
    label = "benchmarks: " + ", ".join(args.only).upper()
    # The product's loop (SIGNOFF_EVENT_LOOP) in every process of the bench, bare ones too.
    event_loop.run(run(args.only, args, label=label), Settings().event_loop)


if __name__ == "__main__":
    main()
