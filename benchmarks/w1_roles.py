"""W1: static roles, a check in memory (shared/BENCHMARKS.md).

Data (seed 1): role ``r`` (0..49 in order) gets ``rng.sample(range(500), rng.randint(20, 50))``
permissions, then user ``u`` (0..9,999 in order) gets ``rng.sample(range(50), rng.randint(1, 3))``
roles. Checks (seed 2): ``(rng.randrange(10000), rng.randrange(500))`` x 100,000. Permission ``p``
is named ``"p{p}"``, role ``r`` ``"r{r}"``.

Every engine answers the same check sequence (slow peers a prefix of it); answers are compared with
``py_flat``'s. Memory: each engine builds its own representation of the generated lists in a fresh
child process (``python w1_roles.py --memory-child ENGINE``), answers its check prefix, and reports
``VmHWM`` from ``/proc/self/status``; the table shows that peak over a child that only generates
the data (``ru_maxrss`` would be inherited across fork+exec).
"""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter as perf
from typing import Any

from _bastion_policy import bastion_status
from _common import BENCH_DIR, Section, Timings, fmt_ratio, fmt_time, md_table, round_robin

N_USERS = 10_000
N_ROLES = 50
N_PERMS = 500
N_CHECKS = 100_000

Check = Callable[[Any, str], Any]


@dataclass
class Data:
    role_perms: list[list[int]]
    user_roles: list[list[int]]
    checks: list[tuple[int, int]]


def make_data(n_checks: int = N_CHECKS) -> Data:
    rng = random.Random(1)
    role_perms = [rng.sample(range(N_PERMS), rng.randint(20, 50)) for _ in range(N_ROLES)]
    user_roles = [rng.sample(range(N_ROLES), rng.randint(1, 3)) for _ in range(N_USERS)]
    rng = random.Random(2)
    checks = [(rng.randrange(N_USERS), rng.randrange(N_PERMS)) for _ in range(n_checks)]
    return Data(role_perms, user_roles, checks)


PERM = [f"p{p}" for p in range(N_PERMS)]
ROLE = [f"r{r}" for r in range(N_ROLES)]


# --------------------------------------------------------------------------- engines
#
# Each factory builds the engine's own representation of the data and returns
# ``(check, subjects)``: ``check(subjects[u], "p17")``.


def py_flat(data: Data) -> tuple[Check, list[Any]]:
    """The reference: ``p in perms_of[u]``, a precomputed dict of frozensets, behind a function."""
    perms_of = {
        u: frozenset(PERM[p] for r in roles for p in data.role_perms[r])
        for u, roles in enumerate(data.user_roles)
    }

    def check(u: int, p: str) -> bool:
        return p in perms_of[u]

    return check, list(range(N_USERS))


class RolesUser:
    """A plain (unmapped) user object whose ``roles`` attribute holds role names."""

    __slots__ = ("id", "roles")

    def __init__(self, id: int, roles: tuple[str, ...]) -> None:
        self.id = id
        self.roles = roles


def bastion_check(data: Data) -> tuple[Check, list[Any]]:
    """``RolePolicy([...]).register(policy, subject=RolesUser, role=subject.roles, many=True)``,
    then ``Authorizer.check(user, "p17")``."""
    from sqlalchemy.orm import Session

    from bastion import Authorizer, Policy, subject
    from bastion.roles import Role, RolePolicy

    roles = RolePolicy(
        [Role(ROLE[r], [PERM[p] for p in perms]) for r, perms in enumerate(data.role_perms)]
    )
    policy = Policy(PERM)  # every permission is declared; a few are held by no role
    roles.register(policy, subject=RolesUser, role=subject.roles, many=True)
    authz = Authorizer(policy, Session())
    users = [RolesUser(u, tuple(ROLE[r] for r in rs)) for u, rs in enumerate(data.user_roles)]
    return authz.check, users


CASBIN_RBAC = """
[request_definition]
r = sub, obj

[policy_definition]
p = sub, obj

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.sub, p.sub) && r.obj == p.obj
"""


def _casbin(data: Data, fast: bool) -> tuple[Check, list[Any]]:
    import casbin
    from casbin.model import FastModel, Model

    lines = [f"p, {ROLE[r]}, {PERM[p]}" for r, ps in enumerate(data.role_perms) for p in ps]
    lines += [f"g, u{u}, {ROLE[r]}" for u, rs in enumerate(data.user_roles) for r in rs]

    class LinesAdapter(casbin.persist.Adapter):  # type: ignore[misc]
        """Policy lines from memory, loaded as a file adapter loads them. (FastPolicy with a
        one-field cache key breaks ``add_policies``: it iterates two levels of cache.)"""

        def load_policy(self, model: Any) -> None:
            for line in lines:
                casbin.persist.load_policy_line(line, model)

    model = FastModel([1]) if fast else Model()
    model.load_model_from_text(CASBIN_RBAC)
    if fast:
        enforcer = casbin.FastEnforcer(model, LinesAdapter(), cache_key_order=[1])
    else:
        enforcer = casbin.Enforcer(model, LinesAdapter())
    enforce = enforcer.enforce
    return (lambda u, p: enforce(u, p)), [f"u{u}" for u in range(N_USERS)]


def casbin_enforcer(data: Data) -> tuple[Check, list[Any]]:
    return _casbin(data, fast=False)


def casbin_fast(data: Data) -> tuple[Check, list[Any]]:
    return _casbin(data, fast=True)


class OsoRole:
    def __init__(self, name: str, permissions: frozenset[str]) -> None:
        self.name = name
        self.permissions = permissions


class OsoUser:
    def __init__(self, id: int, roles: list[OsoRole]) -> None:
        self.id = id
        self.roles = roles


OSO_POLICY = "allow(user: OsoUser, perm, _) if role in user.roles and perm in role.permissions;"


def oso_roles(data: Data) -> tuple[Check, list[Any]]:
    from oso import Oso

    oso = Oso()
    oso.register_class(OsoUser)
    oso.register_class(OsoRole)
    oso.load_str(OSO_POLICY)
    roles = [
        OsoRole(ROLE[r], frozenset(PERM[p] for p in ps)) for r, ps in enumerate(data.role_perms)
    ]
    users = [OsoUser(u, [roles[r] for r in rs]) for u, rs in enumerate(data.user_roles)]
    allowed = oso.is_allowed
    return (lambda user, p: allowed(user, p, "any")), users


#: (name, factory, checks timed, package imported by the factory)
ENGINES: list[tuple[str, Callable[[Data], tuple[Check, list[Any]]], int]] = [
    ("py_flat (reference)", py_flat, N_CHECKS),
    ("bastion `check` (roles, many=True)", bastion_check, N_CHECKS),
    ("pycasbin `FastEnforcer(cache_key_order=[1])`", casbin_fast, 1_000),
    ("oso (`role in user.roles and perm in role.permissions`)", oso_roles, 50),
    ("pycasbin `Enforcer` (RBAC)", casbin_enforcer, 20),
]
BY_NAME = {name: (factory, limit) for name, factory, limit in ENGINES}


# --------------------------------------------------------------------------- memory


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(name: str) -> None:
    """Run in a fresh interpreter: generate the data, build one engine, answer its check prefix,
    print ``{"hwm_kib", "rss_kib"}`` as JSON. ``name`` "baseline" builds no engine."""
    data = make_data()
    if name != "baseline":
        factory, limit = BY_NAME[name]
        check, subjects = factory(data)
        for u, p in data.checks[:limit]:
            check(subjects[u], PERM[p])
    print(json.dumps({"hwm_kib": _status_kib("VmHWM"), "rss_kib": _status_kib("VmRSS")}))


def measure_memory(names: list[str]) -> dict[str, dict[str, int]]:
    out = {}
    for name in ["baseline", *names]:
        proc = subprocess.run(
            [sys.executable, str(BENCH_DIR / "w1_roles.py"), "--memory-child", name],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            logging.error("W1 memory child %s failed:\n%s", name, proc.stderr[-2000:])
            continue
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# --------------------------------------------------------------------------- run


@dataclass
class Engine:
    name: str
    check: Check
    checks: list[tuple[Any, str]]


def run(*, rounds: int = 5, memory: bool = True) -> Section:
    t_start = perf()
    data = make_data()
    notes: list[str] = []
    engines: list[Engine] = []
    for name, factory, limit in ENGINES:
        if name.startswith("bastion") and bastion_status() is not None:
            notes.append(f"bastion not measured: `{bastion_status()}`")
            continue
        try:
            t0 = perf()
            check, subjects = factory(data)
            print(f"W1: {name} set up in {perf() - t0:.1f} s", flush=True)
        except Exception as exc:
            logging.exception("W1 engine %s failed to set up", name)
            notes.append(f"{name} not measured: `{type(exc).__name__}: {exc}`")
            continue
        part = [(subjects[u], PERM[p]) for u, p in data.checks[:limit]]
        engines.append(Engine(name, check, part))
    flat, _ = py_flat(data)
    reference = [flat(u, PERM[p]) for u, p in data.checks]
    answers: dict[str, list[bool]] = {}
    timings = Timings()

    def run_one(e: Engine) -> None:
        check = e.check
        t0 = perf()
        out = [check(s, p) for s, p in e.checks]
        timings.add(e.name, (perf() - t0) / len(e.checks))
        answers.setdefault(e.name, [bool(x) for x in out])

    print(f"W1: {len(engines)} engines x {rounds} rounds ...", flush=True)
    round_robin(engines, rounds, run_one)
    problems = []
    for e in engines:
        bad = [i for i, x in enumerate(answers[e.name]) if x != reference[i]]
        if bad:
            u, p = data.checks[bad[0]]
            problems.append(
                f"W1 {e.name}: {len(bad)} of {len(answers[e.name])} answers differ from py_flat "
                f"(first: user {u} p{p}: got {answers[e.name][bad[0]]}, "
                f"expected {reference[bad[0]]})"
            )
    mem = measure_memory([e.name for e in engines]) if memory else {}
    ref = timings.median(engines[0].name)
    rows = []
    for e in engines:
        med = timings.median(e.name)
        rows.append(
            [
                e.name,
                f"{len(e.checks):,}",
                fmt_time(med),
                fmt_ratio(med / ref),
                _mem_cell(mem, e.name),
                "**DIFFERS**" if any(f" {e.name}:" in p for p in problems) else "ok",
            ]
        )
    allowed = sum(reference) / len(reference)
    base = mem.get("baseline")
    text = [
        "## W1: static roles, check in memory",
        "",
        f"10,000 users, 50 roles, 500 permissions (seed 1); {len(data.checks):,} checks (seed 2), "
        f"{allowed:.1%} allowed. Median per check over {rounds} interleaved rounds (after one "
        "warm-up round); slow peers answer a prefix of the same sequence. Peak memory: VmHWM of a "
        "fresh child process that generates the data, builds the engine and answers its prefix, "
        "minus the VmHWM of a child that only generates the data"
        + (f" ({base['hwm_kib'] / 1024:.1f} MiB)" if base else "")
        + "; it includes importing the engine's package. Target: bastion ≤ 2× py_flat.",
        "",
        md_table(
            [
                "engine",
                "checks timed",
                "median per check",
                "ratio to py_flat",
                "peak RSS",
                "answers",
            ],
            rows,
        ),
    ]
    notes.append(
        "bastion's users are plain objects (`__slots__ = ('id', 'roles')`, role names in a "
        "tuple); the roles are registered with `RolePolicy.register(policy, subject=RolesUser, "
        "role=subject.roles, many=True)`, so a check is the plan lookup plus one "
        "`frozenset.isdisjoint(user.roles)`. Its memory is the policy (500 plans, compiled "
        "lazily by the checks) and the 10,000 user objects; there is no per-subject cache."
    )
    text += ["", *[f"- {n}" for n in notes], "", f"W1 measured in {perf() - t_start:.0f} s."]
    print("\n".join(text), flush=True)
    summary = []
    bastion = next((e.name for e in engines if e.name.startswith("bastion")), None)
    if bastion is not None:
        ratio = timings.median(bastion) / ref
        summary.append(("W1 bastion `check` / py_flat", fmt_ratio(ratio), "≤ 2×"))
        if bastion in mem and base and engines[0].name in mem:
            summary.append(
                (
                    "W1 peak RSS over data: bastion / py_flat",
                    f"{_delta(mem, bastion):.1f} / {_delta(mem, engines[0].name):.1f} MiB",
                    "",
                )
            )
    return Section("\n".join(text), problems, summary)


def _delta(mem: dict[str, dict[str, int]], name: str) -> float:
    return (mem[name]["hwm_kib"] - mem["baseline"]["hwm_kib"]) / 1024


def _mem_cell(mem: dict[str, dict[str, int]], name: str) -> str:
    if name not in mem or "baseline" not in mem:
        return "n/a"
    return f"+{_delta(mem, name):.1f} MiB"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-child":
        memory_child(sys.argv[2])
    else:
        run(rounds=int(sys.argv[1]) if len(sys.argv) > 1 else 5)
