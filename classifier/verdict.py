"""Is the candidate model better than the served one, by what users said was right? The rule of
GET /monitoring's ``candidate.verdict`` (docs/monitoring.md, "The verdict").

Two exact tests, as the evidence comes: in shadow mode both models classified the same
images, so each image with feedback is a pair and McNemar's test weighs the images where
exactly one of them was right; in canary mode each image was answered by one model, and
Fisher's test compares the two shares right. A verdict needs ``MIN_FEEDBACK`` answers on each
side and a two-sided p-value under ``ALPHA``; otherwise there is not enough evidence yet.
"""

from __future__ import annotations

from math import exp, lgamma, log

ALPHA = 0.05
# Fewer answers than this and a difference rests on a handful of users' clicks.
MIN_FEEDBACK = 30

PROMOTE, KEEP, WAIT = "promote", "keep the served model", "not enough evidence yet"
PAIRED_RULE = (f"McNemar's exact test on the images both models classified that have feedback: at least "
               f"{MIN_FEEDBACK} of them, and p < {ALPHA}; the better model wins")
UNPAIRED_RULE = (f"Fisher's exact test on each model's own answers that have feedback: at least "
                 f"{MIN_FEEDBACK} each, and p < {ALPHA}; the better model wins")


def paired_verdict(answered: int, served_only: int, candidate_only: int) -> dict:
    """The verdict on ``answered`` images both models classified, with feedback; ``served_only`` of
    them only the served model got right, ``candidate_only`` only the candidate."""
    if answered < MIN_FEEDBACK:
        return _verdict(WAIT, None, PAIRED_RULE, f"{answered} of the {MIN_FEEDBACK} images with feedback "
                                                  "that both models classified, which the rule needs")
    p = mcnemar_p(served_only, candidate_only)
    counts = (f"of {answered} images with feedback, only the candidate was right on {candidate_only}, "
              f"only the served model on {served_only}")
    return _decide(p, candidate_only - served_only, PAIRED_RULE, counts)


def unpaired_verdict(served_right: int, served_answered: int, candidate_right: int,
                     candidate_answered: int) -> dict:
    """The verdict on each model's own answers with feedback (``*_answered``), ``*_right`` of them right."""
    fewest = min(served_answered, candidate_answered)
    if fewest < MIN_FEEDBACK:
        return _verdict(WAIT, None, UNPAIRED_RULE, f"{served_answered} answers with feedback for the "
                        f"served model and {candidate_answered} for the candidate; the rule needs "
                        f"{MIN_FEEDBACK} each")
    served_wrong, candidate_wrong = served_answered - served_right, candidate_answered - candidate_right
    p = fisher_p(served_right, served_wrong, candidate_right, candidate_wrong)
    counts = (f"the served model was right on {served_right} of {served_answered}, "
              f"the candidate on {candidate_right} of {candidate_answered}")
    better = candidate_right / candidate_answered - served_right / served_answered
    return _decide(p, better, UNPAIRED_RULE, counts)


def _decide(p: float, candidate_lead: float, rule: str, counts: str) -> dict:
    if p >= ALPHA or candidate_lead == 0:
        return _verdict(WAIT, p, rule, f"{counts}: no difference yet (p = {p:.3g})")
    if candidate_lead > 0:
        return _verdict(PROMOTE, p, rule, f"{counts}: the candidate is better (p = {p:.3g})")
    return _verdict(KEEP, p, rule, f"{counts}: the served model is better (p = {p:.3g})")


def _verdict(decision: str, p: float | None, rule: str, reason: str) -> dict:
    return {"decision": decision, "p_value": p, "rule": rule, "reason": reason[0].upper() + reason[1:] + "."}


def mcnemar_p(b: int, c: int) -> float:
    """McNemar's exact test, two-sided: the chance of a split of the b + c discordant pairs at
    least this uneven if either model were as likely to be the one right (a binomial, p = ½)."""
    n = b + c
    tail = sum(exp(_log_choose(n, k) - n * log(2)) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail)


def fisher_p(a: int, b: int, c: int, d: int) -> float:
    """Fisher's exact test, two-sided, of the table [[a, b], [c, d]] (rows: models; columns:
    right, wrong): the chance of a table at most as likely as this one, its margins fixed."""
    row, right, total = a + b, a + c, a + b + c + d

    def log_chance(x: int) -> float:  # hypergeometric: x of the row's answers among the right ones
        return _log_choose(row, x) + _log_choose(total - row, right - x) - _log_choose(total, right)

    observed = log_chance(a)
    chances = (log_chance(x) for x in range(max(0, right - (total - row)), min(row, right) + 1))
    return min(1.0, sum(exp(value) for value in chances if value <= observed + 1e-7))


def _log_choose(n: int, k: int) -> float:
    return lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1)
