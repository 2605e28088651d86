"""The report's answer, decided in one place: which configuration is best on validation and on test,
which ones the runs cannot tell from it, and what the cheapest configuration on the Pareto front
gives up against the front's most accurate one.

`verdicts` builds a `Verdict` (`src.reporting.standing`) per task from pooled configurations
(`configs.group_configs`); `sentences` renders one. Every place that states the answer (console,
`--markdown`, a multirun's end, the page, W&B, the notebook) prints `answer()`, and the page and W&B
keep `as_json()` of it too. A configuration with no number on some seed has no mean to rank by: it
is named, tied with the best and off the front, with the seeds that lack it.

Evidence, by what was run: with two or more seeds in common, the paired t-test on those seeds
(`stats.paired`), tied unless the 95% CI of the mean difference lies above 0 and its p, adjusted by
Holm's method over every pair of the task (`comparisons.Family`), is below 0.05 (`stats.shows_ahead`);
with one seed each, each accuracy's Wilson interval over the images it was measured on (`val_samples`,
`test_samples`) at `Family.level` (all of them hold together at 95%), tied where intervals overlap;
otherwise not compared, so not separated either. So the 5% chance of a difference claimed by luck
holds for each accuracy's comparisons together (validation's; test's with the trade's), and the
answer, naming a best on both, claims one in 5-9% of studies of equal configurations
(docs/verdict.md); a tie is reported as a tie, never as a winner.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from src.record.io import finite_json
from src.reporting.comparisons import (
    COST_WORDS, METRIC_LABEL, Family, cost_ratio, one_seed_interval, one_seed_samples, per_class_label, task_key,
    untasked,
)
from src.reporting.configs import Config, config_labels
from src.reporting.more_seeds import RERUN_SEEDS, more_seeds
from src.reporting.pareto import pareto_front
from src.reporting.standing import Gap, Standing, Trade, Verdict
from src.reporting.stats import SHARE, seeds_to_separate, shows_ahead, within
from src.reporting.wording import (
    and_list, common_seeds, gap_p, gap_size, interval_digits, not_completed, p_text, points, seeds_sentence, value_text,
)

__all__ = ["Gap", "Standing", "Trade", "Verdict", "answer", "as_json", "long_ties", "render", "sentences", "verdicts"]

SPLIT_WORD = {"val_acc": "validation", "test_acc": "test"}
# Accuracies of two runs this close are the same (float rounding; one image of a million is 1e-6).
REPEAT_SLACK = 1e-9
# A tie names at most this many configurations in words: a sweep's 20 one-seed trials can tie by
# the dozen, and a sentence naming each (with its settings) twice was read by no one.
LISTED = 4


def verdicts(configs: Sequence[Config], metric: str = "test_acc", cost: str = "train_flops") -> list[Verdict]:
    """One `Verdict` per task (dataset and training set), in order of first appearance. The trade is
    on `metric` against `cost` (train time where no run counted FLOPs)."""
    tasks: dict[tuple, list[Config]] = {}
    for c in configs:
        tasks.setdefault(task_key(c), []).append(c)
    # inside a task, the dataset and training-set size that the labels might carry go without saying
    labels = config_labels([untasked(c.key) for c in configs]) if len(tasks) > 1 else {}
    names = {id(c): c.named(labels.get(untasked(c.key), c.label)) for c in configs}
    out = []
    for members in tasks.values():
        where = f"{members[0].dataset} ({per_class_label(members[0])} per class)" if len(tasks) > 1 else None
        counts = [len(c.runs) for c in members]
        left = tuple(not_completed(names[id(c)], c.lost) for c in members if c.lost) + tuple(
            not_completed(u.label, u.runs) for u in getattr(configs, "unfinished", ()) if task_key(u) == task_key(members[0]))
        val, test = _standing(members, "val_acc", names), _standing(members, "test_acc", names)
        # an accuracy no configuration has on every seed leaves no standing: said, not left unsaid
        unmeasured = tuple(f"{METRIC_LABEL[m]}: {'; '.join(f'{names[id(c)]} ({_no_value(c, (m,))})' for c in members)}"
                           for m, s in (("val_acc", val), ("test_acc", test)) if s is None)
        again = tuple(a for c in members if (a := _repeated_apart(c, names[id(c)])) is not None)
        out.append(Verdict(where, (min(counts), max(counts)), val, test, _trade(members, names, metric, cost), left,
                           unmeasured, again))
    return out


def _repeated_apart(config: Config, name: str) -> str | None:
    """Its seeds run again with other accuracies (`configs.Duplicate.apart`): "full on seeds 0, 2, up to
    1.4 points apart". Only the first run of a seed in folder order is counted, so without this the
    answer read as the seeds' measure, and reporting the folders in the other order changed it unsaid."""
    apart = [d for d in config.duplicates if d.apart > REPEAT_SLACK]
    if not apart:
        return None
    seeds = sorted({d.run.result.seed for d in apart})  # type: ignore[type-var]  # integer seeds only (load_runs)
    return (f"{name} on seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}, "
            f"up to {points(max(d.apart for d in apart))} points apart")


def _mean(config: Config, measure: str) -> float | None:
    stat = config.stats.get(measure)
    return None if stat is None or math.isnan(stat[0]) else stat[0]


def _half(config: Config, measure: str) -> float | None:
    stat = config.stats.get(measure)
    return None if stat is None or math.isnan(stat[1]) else stat[1]


def _samples(config: Config, metric: str) -> int | None:
    return one_seed_samples(config, metric)


def _interval(config: Config, metric: str, level: float) -> tuple[float, float] | None:
    return one_seed_interval(config, metric, level)  # the rule the win map ties by too


def _num(config: Config, measure: str) -> float:
    """A mean the caller has checked is there."""
    return config.stats[measure][0]


def _gap(lead: Config, other: Config, metric: str, names: dict[int, str], family: Family) -> Gap:
    mean = _num(other, metric)
    interval = _interval(other, metric, family.level)
    base = dict(name=names[id(other)], mean=mean, ci95=_half(other, metric), interval=interval)
    test = family.test(lead, other)
    if test is not None:
        diff, half, pairs = test["diff"], test["ci95"], test["pairs"]
        tied = not shows_ahead(test)  # the CI of the mean difference holds 0 or lies below it, or Holm's p >= 0.05
        return Gap(**base, behind=diff, evidence="paired", tied=tied, behind_ci95=half, p=test["p"],
                   p_holm=test["p_holm"], pairs=pairs, seeds=test["n"],
                   partial=test["n"] < max(len(lead.runs), len(other.runs)),
                   seeds_to_tell=seeds_to_separate(diff, half, test["n"], comparisons=pairs)
                   if tied and not shows_ahead(test | {"diff": -diff}) else None)
    behind = _num(lead, metric) - mean
    if (overlap := family.intervals_overlap(lead, other)) is not None:
        return Gap(**base, behind=behind, evidence="intervals", tied=overlap)
    one_each = len(lead.runs) == 1 and len(other.runs) == 1
    why = "one seed, and no interval for this measure" if one_each else "fewer than two seeds in common"
    return Gap(**base, behind=behind, evidence="none", tied=True, why_not=why)


def _standing(configs: Sequence[Config], metric: str, names: dict[int, str]) -> Standing | None:
    placed = [c for c in configs if _mean(c, metric) is not None]
    if not placed:
        return None
    best, family = max(placed, key=lambda c: _num(c, metric)), Family(placed, metric)
    gaps = sorted((_gap(best, c, metric, names, family) for c in placed if c is not best), key=lambda g: -g.mean)
    # no number on a seed, no mean to rank by: it might be the best, so it is tied with it, and says why
    gaps += [Gap(names[id(c)], math.nan, None, None, math.nan, "none", True, why_not=_no_value(c, (metric,)))
             for c in configs if _mean(c, metric) is None]
    return Standing(metric, names[id(best)], _num(best, metric), _half(best, metric),
                    _interval(best, metric, family.level), _samples(best, metric) if len(best.runs) == 1 else None,
                    tuple(gaps), family.level, more_seeds(placed))


def _trade(configs: Sequence[Config], names: dict[int, str], metric: str, cost: str) -> Trade | None:
    if not all(_mean(c, cost) is not None for c in configs if _mean(c, metric) is not None):
        cost = "train_time_s"  # FLOPs not counted for one (trainer.count_flops=false): a front without it lies
    measured = [c for c in configs if _mean(c, metric) is not None]
    placed = [c for c in measured if _mean(c, cost) is not None]
    unplaced = tuple(f"{names[id(c)]} ({_no_value(c, (metric, cost))})" for c in configs
                     if all(c is not p for p in placed))
    front = [placed[i] for i in pareto_front([(_num(c, metric), _num(c, cost)) for c in placed])]
    if not front:
        return None
    cheap, top, family = front[0], max(front, key=lambda c: _num(c, metric)), Family(measured, metric)
    return Trade(metric, cost, names[id(cheap)], names[id(top)], _num(cheap, metric), _num(top, metric),
                 _half(cheap, metric), _half(top, metric), _interval(top, metric, family.level), _num(cheap, cost),
                 _num(top, cost), None if cheap is top else _gap(top, cheap, metric, names, family), unplaced,
                 _half(cheap, cost), _half(top, cost))


def _no_value(config: Config, measures: Sequence[str]) -> str:
    """Why a configuration has no mean of `measures`: "no test accuracy on seed 2" (null in its result.json)."""
    out = []
    for m in measures:
        if seeds := config.missing(m):
            out.append(f"no {METRIC_LABEL.get(m, COST_WORDS.get(m, m))} on seed{'s' * (len(seeds) > 1)} "
                       f"{', '.join(map(str, seeds))}")
    return " and ".join(out)


# --- rendering: the one text every output shows -----------------------------------------------------


def answer(configs: Sequence[Config], metric: str = "test_acc", cost: str = "train_flops") -> list[str]:
    return render(verdicts(configs, metric, cost))  # a few sentences per task, one string each


def render(found: Sequence[Verdict]) -> list[str]:
    return [" ".join(sentences(v)) for v in found]  # one string per verdict


def as_json(found: Sequence[Verdict]) -> list[dict[str, Any]]:
    """The verdicts as plain data (verdict.json, the W&B summary), with each standing's best set and
    the rendered text beside the structure it came from; a gap's missing CI (no spread) as null in both,
    where W&B kept a bare NaN."""
    out = []
    for v in found:
        data = dataclasses.asdict(v) | {"one_seed": v.one_seed, "text": " ".join(sentences(v))}
        for split in ("validation", "test"):
            standing = getattr(v, split)
            if standing is not None:
                data[split]["best_set"] = standing.best_set
        out.append(finite_json(data))
    return out


def _counted(s: Standing) -> bool:
    """Whether the answer counts this standing's tie rather than naming every member."""
    return len(s.best_set) > LISTED


def long_ties(found: Sequence[Verdict]) -> list[tuple[str, list[str]]]:
    """Each tie that the answer counts rather than names (more than LISTED): where ("validation",
    "test", with the task when there are several) and every configuration in it, best first."""
    out = []
    for v in found:
        for split in ("validation", "test"):
            standing = getattr(v, split)
            if standing is not None and _counted(standing):
                out.append((f"{v.task}, {split}" if v.task else split, standing.best_set))
    return out


def sentences(v: Verdict) -> list[str]:
    """The verdict in words: how many seeds and what the evidence is, who is best on validation
    and on test (ties named together), and the cheap end's trade with its evidence."""
    out = [_seeds_sentence(v)]
    if v.left_out:  # a seed that diverged is evidence too: the means are over the seeds that completed
        out.append(f"Not counted, as they did not complete: {'; '.join(v.left_out)}.")
    if v.repeated_apart:  # one of two measures of a seed is counted: which one decides the numbers below
        out.append(f"Run again on the same seed with other accuracies, and counted once (the first run in folder "
                   f"order): {'; '.join(v.repeated_apart)}. A repeat measures the same unless the code, data or "
                   f"device changed: find which run to trust.")
    out += [f"No configuration has a number on every seed for {what}." for what in v.unmeasured]
    val, test = v.validation, v.test
    if val is not None and test is not None and set(val.best_set) == set(test.best_set):
        out.append(_standing_sentence([val, test]))
    else:
        out += [_standing_sentence([s]) for s in (val, test) if s is not None]
    if v.trade is not None:
        out.append(_trade_sentence(v.trade))
    if v.task is not None:
        out[0] = f"On {v.task}: {out[0]}"
    return out


def _seeds_sentence(v: Verdict) -> str:
    counts = [f"{s.samples} {SPLIT_WORD[s.metric]}" for s in (v.validation, v.test) if s is not None and s.samples]
    return seeds_sentence(*v.seeds, counts, next((s.level for s in (v.test, v.validation) if s is not None), 0.95),
                          _cut(v), _wilson_shown(v))


def _wilson_shown(v: Verdict) -> bool:
    """Whether the answer prints a one-seed accuracy's Wilson interval (in brackets, as a CI cut at 0 or 1
    is): among several seeds the first sentence must say which brackets are which."""
    standings = [s for s in (v.validation, v.test) if s is not None]
    gaps = [g for s in standings for g in s.gaps] + ([v.trade.gap] if v.trade is not None and v.trade.gap else [])
    return any(x is not None for x in [s.interval for s in standings] + [g.interval for g in gaps]
               + ([v.trade.top_interval] if v.trade is not None else []))


def _cut(v: Verdict) -> bool:
    """Whether a CI of the answer runs past what it can be (an accuracy past 0 or 1, a gap past 100
    points), and so is printed as its ends cut there (`stats.format_ci`), which the first sentence says."""
    standings = [s for s in (v.validation, v.test) if s is not None]
    gaps = [g for s in standings for g in s.gaps] + ([v.trade.gap] if v.trade is not None and v.trade.gap else [])
    shares = [(s.mean, s.ci95) for s in standings] + [(g.mean, g.ci95) for g in gaps] + (
        [(v.trade.cheap_mean, v.trade.cheap_ci95), (v.trade.top_mean, v.trade.top_ci95)] if v.trade is not None else [])
    ends = [(m, h, SHARE) for m, h in shares] + [(g.behind, g.behind_ci95, (-1.0, 1.0)) for g in gaps]
    return any(h is not None and math.isfinite(h) and within(m, h, r) != (m - h, m + h) for m, h, r in ends)


def _gap_text(g: Gap, digits: int = 3) -> str:
    """A configuration against the leader: its paired gap and p, or its accuracy and interval."""
    if g.evidence == "paired" and g.behind == 0 and g.behind_ci95 == 0:  # `stats.paired`: no gap on any seed
        return f"{g.name} the same on each of their {g.seeds} common seeds, {gap_p(g)}"  # not "0.0 ± 0.0 points behind"
    if g.evidence == "paired":
        side = "behind" if g.behind >= 0 else "ahead"
        return f"{g.name} {gap_size(g)} points {side}{common_seeds(g)}, {gap_p(g)}"
    if math.isnan(g.mean):  # no number on some seed (`_no_value`)
        return f"{g.name} ({g.why_not}: not compared)"
    value = f"{g.name} {value_text(g.mean, g.ci95, g.interval, digits)}"
    return value if g.evidence == "intervals" else f"{value} ({g.why_not}: not compared)"


def _standing_sentence(standings: Sequence[Standing]) -> str:
    """Who is best on one accuracy, or on both when they agree (`standings`: validation, test). A
    tie of more than LISTED configurations (a sweep's trials, often) names the LISTED closest and
    the furthest; the rest are counted, and the page (`long_ties`) and verdict.json's `best_set`
    list them all."""
    last = standings[-1]
    where = " and on ".join(SPLIT_WORD[s.metric] for s in standings)
    details = []
    for s in standings:
        digits = interval_digits([(s.interval, g.interval) for g in s.gaps])
        lead = value_text(s.mean, s.ci95, s.interval, digits)
        if s.tied:
            if not _counted(s):
                shown = [_gap_text(g, digits) for g in s.tied]
            else:  # the closest, a count, and the furthest: how wide the tie is
                shown = [_gap_text(g, digits) for g in s.tied[:LISTED - 2]]
                shown.append(f"{len(s.tied) - LISTED + 1} more and, the furthest, {_gap_text(s.tied[-1], digits)}")
            part = ", ".join([f"{s.best} {lead}"] + shown)
        else:
            part = lead + (f", next {_gap_text(s.runner_up, digits)}" if s.runner_up is not None else "")
        details.append(f"{SPLIT_WORD[s.metric]}: {part}" if len(standings) > 1 else part)
    many = _counted(last)
    text = f"Best on {where}: " + (f"{len(last.best_set)} configurations" if many else and_list(last.best_set))
    kinds = {g.evidence for s in standings for g in s.tied}
    joint = " " if many else ", "  # "9 configurations whose ...", "layerwise and full, whose ..."
    if any(g.reversed for s in standings for g in s.tied):
        text += joint + "which these runs cannot rank, their means and their common seeds disagreeing"
    elif kinds == {"paired"}:
        text += joint + "which the seeds cannot tell apart"
    elif kinds == {"intervals"}:
        text += joint + "whose intervals overlap"
    elif kinds:
        text += joint + "which these runs cannot tell apart"
    text += f" ({'; '.join(details)})"
    if many:
        text += f"; the report (its page and verdict.json) lists all {len(last.best_set)}"
    return text + _settle(last) + "."


def _settle(s: Standing) -> str:
    """What would tell the tied configurations apart, when anything is known to."""
    if not (ranked := [g for g in s.tied if not math.isnan(g.mean)]):  # more seeds do not fill a null
        return ""
    first = ranked[0]  # a sweep re-runs only its Pareto set (a tied trial off it gets no more seeds): said so
    swept = f"; a sweep runs more seeds for its Pareto set only: the same command with {s.more_seeds}"
    if first.evidence == "intervals" or first.why_not.startswith("one seed"):
        return swept if s.more_seeds.startswith(RERUN_SEEDS) else f"; run {s.more_seeds} to test whether they differ"
    if first.evidence == "none" or any(g.reversed for g in ranked):  # the paired test needs common seeds
        return swept if s.more_seeds.startswith(RERUN_SEEDS) else f"; run them on the same seeds ({s.more_seeds}) to compare"
    if first.seeds_to_tell is not None:
        return (f"; about {first.seeds_to_tell} seeds would tell {s.best} and {first.name} apart if the gap and "
                f"spread seen so far held")
    return ""


def _trade_sentence(t: Trade) -> str:
    what, spent = METRIC_LABEL.get(t.metric, t.metric), COST_WORDS.get(t.cost, t.cost)
    off = f" Not on the front, for want of a number: {'; '.join(t.unplaced)}." if t.unplaced else ""
    if t.gap is None:
        return f"On {what} against {spent}, {t.top} is also the cheapest: no configuration trades {what} for a lower cost.{off}"
    g, digits = t.gap, interval_digits([(t.top_interval, t.gap.interval)])  # both intervals printed alike
    head = (f"The cheapest configuration on the Pareto front of {what} against {spent}, {t.cheap}, reaches "
            f"{value_text(t.cheap_mean, t.cheap_ci95, g.interval, digits)} {what}")
    side = "below" if g.behind >= 0 else "above"
    if g.evidence == "paired":
        gap = f"{gap_size(g)} points {side} {t.top}"
        if g.reversed:  # above on their common seeds, below on the means that put it at the cheap end
            gap += f"{common_seeds(g) or f' on their {g.seeds} common seeds'} ({gap_p(g)}) though below it on the mean"
        else:
            gap += common_seeds(g) + (f", a gap the seeds cannot tell from none ({gap_p(g)})" if g.tied else f" ({gap_p(g)})")
    else:
        gap = f"{points(g.behind)} points {side} {t.top}'s {value_text(t.top_mean, t.top_ci95, t.top_interval, digits)}"
        if g.evidence == "intervals":
            gap += ", within their overlapping intervals" if g.tied else " (the intervals do not overlap)"
        else:
            gap += f" ({g.why_not}: not compared)"
    return f"{head}, {gap}, at {cost_ratio(t.cheap_cost, t.top_cost)} of its {spent}{_measured_cost(t)}.{off}"


def _measured_cost(t: Trade) -> str:
    """A training time is measured, not counted: its numbers, so that a ratio near 1 is not read as a
    saving the seeds show (10.1 ± 0.4 s against 10.2 ± 0.5 s read 'at 99% of its training time')."""
    if t.cost != "train_time_s":
        return ""
    if t.cheap_cost_ci95 is None or t.top_cost_ci95 is None:
        return f" ({t.cheap_cost:.3g} s against {t.top_cost:.3g} s, one measured time each)"
    if t.cheap_cost_ci95 == 0 == t.top_cost_ci95:
        return f" ({t.cheap_cost:.3g} s against {t.top_cost:.3g} s, the same on every seed)"
    overlap = t.cheap_cost + t.cheap_cost_ci95 >= t.top_cost - t.top_cost_ci95
    least = min(t.cheap_cost_ci95, t.top_cost_ci95)  # decimals for two digits of the narrower interval
    d = 1 if least <= 0 else max(0, 1 - math.floor(math.log10(least)))
    return (f" ({t.cheap_cost:.{d}f} ± {t.cheap_cost_ci95:.{d}f} s against {t.top_cost:.{d}f} ± {t.top_cost_ci95:.{d}f} s"
            + (", intervals that overlap: the seeds do not show it cheaper)" if overlap else ")"))
