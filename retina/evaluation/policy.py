"""The referral policy in an evaluation: on validation, chosen on the scans the gate let
through and written to ``referral.json``; elsewhere, read and applied where it fits."""

from __future__ import annotations

import logging

from retina.uncertainty.referral import (
    REFER_COLUMN,
    choose_policy,
    fit_calibration,
    ranking_column,
    read_policy,
    refer,
    write_policy,
)

log = logging.getLogger(__name__)


def policy_and_calibration(scorer, predictions, options, samples: int):
    """(the referral policy that applies here, the Platt fit to measure uncertainty after):
    on validation no policy yet and a fresh fit; elsewhere the policy's, if one fits."""
    u = options.uncertainty
    if options.split == "val":
        return None, fit_calibration(predictions) if u.calibrate else None
    policy = read_policy(scorer.policy_dir, u, samples, scorer.checkpoint)
    if u.calibrate and not policy:
        log.info(
            "No referral.json chosen with these uncertainty settings in %s: referral is "
            "ranked by uncalibrated probabilities (run evaluate split=val first).",
            scorer.policy_dir,
        )
    return policy, policy.get("calibration") if policy else None


def apply_policy(scorer, predictions, kept, metrics, options, samples, policy, calibration):
    """On validation: choose and write ``referral.json`` on the ``kept`` scans (through the
    gate, graded); elsewhere: apply it if it fits."""
    u = options.uncertainty
    if options.split == "val":
        policy = choose_policy(
            predictions[kept], u, samples, scorer.checkpoint, calibration, metrics["dataset"]
        )
        write_policy(scorer.policy_dir, policy)
    if policy:
        column = ranking_column(str(u.measure), predictions)
        referred = refer(predictions[column], predictions["referred_default"], policy)
        predictions[REFER_COLUMN] = referred.astype(int)
        share = float(referred[kept].mean())
        metrics["referral"]["policy"] = {**policy, "referred_share": share}
