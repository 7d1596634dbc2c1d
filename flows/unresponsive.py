"""Runs whose process died without a word are marked Crashed: `python -m flows.unresponsive`.

A flow run that is killed hard (SIGKILL, out of memory, a power cut) cannot report its end: Prefect
would show it Running for ever (its training slot is freed when the slot's lease lapses). Each run's
process sends Prefect a heartbeat event every `PREFECT_FLOWS_HEARTBEAT_FREQUENCY` seconds (180 by
default); this Prefect automation marks a namelang run Crashed once neither a heartbeat nor a final
state has come for three of those periods since it started running or sent its last heartbeat. It is
Prefect's own recipe (docs: "How to detect and respond to zombie flows"), kept to the runs tagged
`namelang`, so that other flows on the same server are left to their owners. `flows.serve` sets it
up when it starts; with `prefect deploy` and a worker, run this module once against the server.
"""

from __future__ import annotations

import argparse
from datetime import timedelta

from prefect import get_client
from prefect.client.schemas.objects import TERMINAL_STATES, StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.settings import get_current_settings

from flows.local_api import configured_api
from pipeline.errors import NamelangError

AUTOMATION_NAME = "namelang: crash unresponsive runs"
RUN_TAG = "namelang"  # the deployments' runs carry it (flows.serve, prefect.yaml), and the CLI's
MISSED_HEARTBEATS = 3  # as Prefect's recipe: a late heartbeat or two is no death
HEARTBEAT = "prefect.flow-run.heartbeat"
# The server records a run's start itself: a run killed before its first heartbeat reached the server
# (they go out from a background queue) is watched from there.
RUNNING = "prefect.flow-run.Running"
# a state change is an event named after the state: prefect.flow-run.Completed, ...
FINAL = tuple(f"prefect.flow-run.{state.value.capitalize()}" for state in TERMINAL_STATES)


def crash_unresponsive_runs(heartbeat_s: int) -> AutomationCore:
    """The automation, for runs that send a heartbeat every `heartbeat_s` seconds."""
    return AutomationCore(
        name=AUTOMATION_NAME,
        description=f"Marks a flow run tagged {RUN_TAG!r} Crashed when neither a heartbeat nor a final state has "
                    f"come for {MISSED_HEARTBEATS * heartbeat_s} s ({MISSED_HEARTBEATS} heartbeats of {heartbeat_s} "
                    "s): its process died without a word. Set up by namelang (flows.unresponsive, run by flows.serve).",
        trigger=EventTrigger(
            after={HEARTBEAT, RUNNING},
            expect={HEARTBEAT, *FINAL},
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            match_related=ResourceSpecification({"prefect.resource.role": "tag",
                                                 "prefect.resource.id": f"prefect.tag.{RUN_TAG}"}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=MISSED_HEARTBEATS * heartbeat_s),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=f"No heartbeat for {MISSED_HEARTBEATS} "
                                    f"periods of {heartbeat_s} s: the run's process died without reporting its end")],
    )


def ensure_crash_automation() -> AutomationCore | None:
    """The automation on the configured Prefect API: created, or the one there brought up to date.
    None, and nothing done, when heartbeats are turned off.

    Left as it is when nothing changed: an update gives its trigger a new id, and the server then
    forgets the runs it was watching (a run killed just before a restart would never be Crashed).
    Its window only grows: it applies to every namelang run on the server, and a process that beats
    less often (a worker left at the default) would be Crashed while it runs by a shorter window;
    to shorten it, delete it first. Whether it is enabled is left as it is (off by hand stays off).
    """
    heartbeat_s = get_current_settings().flows.heartbeat_frequency
    if heartbeat_s is None:
        return None
    wanted = crash_unresponsive_runs(heartbeat_s)
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(AUTOMATION_NAME)
        if not existing:
            client.create_automation(wanted)
            return wanted
        current = existing[0]
        for duplicate in existing[1:]:  # two processes that started at once both created one
            client.delete_automation(duplicate.id)
        if current.trigger.within > wanted.trigger.within:
            return current
        wanted.enabled = current.enabled
        if _definition(current) != _definition(wanted):
            client.update_automation(current.id, wanted)
    return wanted


def _definition(automation: AutomationCore) -> dict:
    return automation.model_dump(include={"description", "trigger", "actions", "enabled"})  # sets as sets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.unresponsive", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    try:
        served = configured_api()
    except NamelangError as exc:
        parser.exit(2, f"error: {exc}\n")
    if not served:  # a temporary API would forget it on exit, and runs nothing that could die
        parser.exit(2, "error: PREFECT_API_URL is not set: point it at the Prefect server that runs namelang's "
                    "deployments\n")
    automation = ensure_crash_automation()
    if automation is None:
        parser.exit(0, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY is off: runs send no heartbeat, nothing to watch\n")
    print(f"automation {AUTOMATION_NAME!r}: {automation.description}")
    heartbeat_s = get_current_settings().flows.heartbeat_frequency
    if automation.trigger.within.total_seconds() > MISSED_HEARTBEATS * heartbeat_s:
        print(f"(kept: it waits longer than {MISSED_HEARTBEATS} x {heartbeat_s} s; to shorten it, delete it first: "
              f"prefect automation delete {AUTOMATION_NAME!r})")


if __name__ == "__main__":  # pragma: no cover
    main()
