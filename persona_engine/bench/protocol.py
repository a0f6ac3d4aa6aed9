"""The evaluation protocol of the reward benchmark: which comparisons train, which test.

A *text* here is a response (the chosen or the rejected side of a comparison), identified by its
content hash; the prompt does not count. Given comparisons in the interchange format, for one seed:

1. (optional, for sets with very few users) each user's comparisons are shuffled and cut into
   pseudo-users of ``chunk_users`` comparisons, ``"<user>#<j>"``; a remainder shorter than
   ``min_comparisons`` is dropped. Every real user then appears among both seen and unseen users.
2. (optional) a user with more than ``max_per_user`` comparisons keeps a seeded random sample.
3. Users with at least ``min_comparisons`` comparisons take part; a seeded permutation splits them
   into *seen* users (the first ``seen_fraction``) and *unseen* users.
4. Unseen users (:func:`split_by_text`): their comparisons are shuffled; the first
   ``candidate_shots`` (20) are the candidate shots. The test set is fixed once, before any ``k``
   is drawn: the user's other comparisons that share no text with any of the candidate shots
   (those that do are dropped). The user is onboarded from the first ``k`` shots for every ``k``,
   so every ``k`` is scored on the same test pairs, and every test pair is new to the user at
   every ``k``. A user left with fewer than ``min_test`` test comparisons is left out.
5. Seen users (:func:`split_seen_by_text`): their comparisons are shuffled and taken one at a
   time; both texts of each go to the user's *test texts*, until the test pairs (both texts among
   the test texts) make up ``test_fraction`` of the pairs kept. Training pairs are those with no
   test text; pairs with one text on each side are dropped. So a seen user's test pairs share no
   text with their training pairs. A user whose pairs cannot be split so (every test text would
   leave no training pair) keeps all pairs for training and is not scored.

The old split, kept so the change is visible (:func:`split_by_comparison`), cuts seen users'
shuffled comparisons 70/30 into train / test, and unseen users' in half (shots / test), by
comparison: test pairs may repeat the texts the user was trained or onboarded on.

Every random choice is drawn from a generator seeded by ``(seed, stage, crc32(user))`` so one
user's split does not depend on which other users are in the file. The counts each rule leaves
and drops are in :attr:`RewardSplit.counts` and its notes.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidInputError

STAGE_CHUNK, STAGE_SAMPLE, STAGE_USERS, STAGE_SEEN, STAGE_UNSEEN = 1, 2, 3, 4, 5
STAGE_SEEN_TEXTS, STAGE_SHOTS = 6, 7


def user_rng(seed: int, stage: int, user: str = "") -> np.random.Generator:
    """A generator for one (seed, stage, user), independent of every other user."""
    return np.random.default_rng([seed, stage, zlib.crc32(user.encode("utf-8"))])


@dataclass
class ProtocolConfig:
    seed: int = 0
    min_comparisons: int = 20
    max_per_user: int | None = None
    chunk_users: int | None = None
    seen_fraction: float = 0.5
    candidate_shots: int = 20
    min_test: int = 5
    test_fraction: float = 0.3
    train_fraction: float = 0.7  # the old split only


@dataclass
class RewardSplit:
    """Row indices (into the list given to the split) of every part of the protocol.

    ``unseen_pool`` holds an unseen user's candidate shots in order (k shots are its first k),
    ``unseen_test`` their fixed test set. ``counts`` says how many pairs each rule kept and dropped.
    """

    user_of_row: list[str]
    seen_users: list[str]
    unseen_users: list[str]
    seen_train: dict[str, np.ndarray]
    seen_test: dict[str, np.ndarray]
    unseen_pool: dict[str, np.ndarray]
    unseen_test: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def shots(self, user: str, k: int) -> np.ndarray:
        """The first ``k`` candidate shots of an unseen user (fewer when the pool is short)."""
        return self.unseen_pool[user][:k]

    def train_rows(self) -> np.ndarray:
        """Rows the population model is fitted on: the seen users' training comparisons."""
        parts = [self.seen_train[u] for u in self.seen_users]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def used_rows(self) -> np.ndarray:
        parts = [
            *self.seen_train.values(),
            *self.seen_test.values(),
            *self.unseen_pool.values(),
            *self.unseen_test.values(),
        ]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def remapped(self, new_index: np.ndarray, user_of_row: list[str]) -> RewardSplit:
        """The same split with every row ``r`` renamed ``new_index[r]`` (rows of a subset)."""

        def remap(parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {u: new_index[r] for u, r in parts.items()}

        return RewardSplit(
            user_of_row=user_of_row,
            seen_users=self.seen_users,
            unseen_users=self.unseen_users,
            seen_train=remap(self.seen_train),
            seen_test=remap(self.seen_test),
            unseen_pool=remap(self.unseen_pool),
            unseen_test=remap(self.unseen_test),
            notes=list(self.notes),
            counts=dict(self.counts),
        )


@dataclass
class _Users:
    owner: list[str]
    groups: dict[str, np.ndarray]
    seen: list[str]
    unseen: list[str]
    notes: list[str]


def _group(user_ids: Sequence[str]) -> dict[str, np.ndarray]:
    rows: dict[str, list[int]] = {}
    for i, u in enumerate(user_ids):
        rows.setdefault(u, []).append(i)
    return {u: np.asarray(r, dtype=np.int64) for u, r in rows.items()}


def _select_users(user_ids: Sequence[str], cfg: ProtocolConfig) -> _Users:
    """Steps 1-3 of the protocol: pseudo-users, caps, eligibility, the seen / unseen split."""
    if not 0 < cfg.seen_fraction < 1 or not 0 < cfg.train_fraction < 1:
        raise InvalidInputError(
            "seen_fraction and train_fraction must lie strictly between 0 and 1"
        )
    if not 0 < cfg.test_fraction < 1:
        raise InvalidInputError("test_fraction must lie strictly between 0 and 1")
    if cfg.min_comparisons < 4:
        raise InvalidInputError("min_comparisons must be at least 4 (each part needs comparisons)")
    notes: list[str] = []
    owner = list(user_ids)
    groups = _group(owner)
    if cfg.chunk_users:
        if cfg.chunk_users < cfg.min_comparisons:
            raise InvalidInputError(
                f"chunk_users ({cfg.chunk_users}) must be at least min_comparisons ({cfg.min_comparisons})"
            )
        chunked: dict[str, np.ndarray] = {}
        for u, rows in groups.items():
            rows = rows[user_rng(cfg.seed, STAGE_CHUNK, u).permutation(len(rows))]
            for j in range(0, len(rows), cfg.chunk_users):
                part = rows[j : j + cfg.chunk_users]
                if len(part) >= cfg.min_comparisons:
                    chunked[f"{u}#{j // cfg.chunk_users}"] = np.sort(part)
        notes.append(
            f"each of {len(groups)} users cut into pseudo-users of {cfg.chunk_users} comparisons ({len(chunked)} pseudo-users)"
        )
        groups = chunked
        for pseudo, rows in groups.items():
            for r in rows:
                owner[r] = pseudo
    if cfg.max_per_user:
        capped = 0
        for u, rows in list(groups.items()):
            if len(rows) > cfg.max_per_user:
                pick = user_rng(cfg.seed, STAGE_SAMPLE, u).choice(
                    len(rows), cfg.max_per_user, replace=False
                )
                groups[u] = np.sort(rows[pick])
                capped += 1
        if capped:
            notes.append(f"{capped} users capped at {cfg.max_per_user} comparisons (seeded sample)")
    eligible = sorted(u for u, rows in groups.items() if len(rows) >= cfg.min_comparisons)
    dropped = len(groups) - len(eligible)
    if dropped:
        notes.append(f"{dropped} users with fewer than {cfg.min_comparisons} comparisons left out")
    if len(eligible) < 2:
        raise InvalidInputError(
            f"the protocol needs at least 2 users with >= {cfg.min_comparisons} comparisons, found {len(eligible)}"
            + (
                ""
                if cfg.chunk_users
                else "; for a set with very few users, cut them into pseudo-users (chunk_users)"
            )
        )
    order = [eligible[i] for i in user_rng(cfg.seed, STAGE_USERS).permutation(len(eligible))]
    n_seen = min(max(1, int(round(len(order) * cfg.seen_fraction))), len(order) - 1)
    return _Users(owner, groups, order[:n_seen], order[n_seen:], notes)


def split_seen_by_text(
    rows: np.ndarray,
    chosen_hash: Sequence[str],
    rejected_hash: Sequence[str],
    test_fraction: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, test, dropped) rows of one seen user: test pairs share no text with train pairs.

    The user's pairs are taken in a random order; both texts of each join the test texts, until
    the test pairs (both texts test texts) are closest to ``test_fraction`` of the kept pairs
    (test + train, where train pairs have no test text). Pairs with one text on each side are
    dropped. When no step leaves both a test and a training pair, every pair trains."""
    rows = np.asarray(rows, dtype=np.int64)
    order = rows[rng.permutation(len(rows))]
    pairs_of: dict[str, list[int]] = {}
    for j, r in enumerate(rows):
        for h in {chosen_hash[r], rejected_hash[r]}:
            pairs_of.setdefault(h, []).append(j)
    texts_in = np.array([len({chosen_hash[r], rejected_hash[r]}) for r in rows])
    in_test = np.zeros(len(rows), dtype=np.int64)  # test texts per pair
    test_texts: list[str] = []
    seen: set[str] = set()
    n_test, n_train = 0, len(rows)
    best: tuple[float, int] | None = None  # (distance to the target, number of test texts)
    for r in order:
        for h in (chosen_hash[r], rejected_hash[r]):
            if h in seen:
                continue
            seen.add(h)
            test_texts.append(h)
            for j in pairs_of[h]:
                if in_test[j] == 0:
                    n_train -= 1
                in_test[j] += 1
                if in_test[j] == texts_in[j]:
                    n_test += 1
        if n_train == 0:
            break
        share = n_test / (n_test + n_train)
        if n_test and (best is None or abs(share - test_fraction) < best[0]):
            best = (abs(share - test_fraction), len(test_texts))
        if share >= test_fraction:
            break
    if best is None:
        return np.sort(rows), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    chosen_texts = set(test_texts[: best[1]])
    side = np.array(
        [(chosen_hash[r] in chosen_texts) + (rejected_hash[r] in chosen_texts) for r in rows]
    )  # 0: no test text, 2: both texts are test texts (or the one text, when both are equal)
    train, test, dropped = rows[side == 0], rows[side == 2], rows[side == 1]
    return np.sort(train), np.sort(test), np.sort(dropped)


def split_by_text(
    user_ids: Sequence[str],
    chosen_hash: Sequence[str],
    rejected_hash: Sequence[str],
    config: ProtocolConfig | None = None,
) -> RewardSplit:
    """The protocol's split (module docstring, steps 1-5) of the rows of a comparison list, given
    the user and the content hashes of both texts of each row."""
    cfg = config or ProtocolConfig()
    if not len(user_ids) == len(chosen_hash) == len(rejected_hash):
        raise InvalidInputError("user_ids, chosen_hash and rejected_hash differ in length")
    if cfg.candidate_shots < 1 or cfg.min_test < 1:
        raise InvalidInputError("candidate_shots and min_test must be positive")
    sel = _select_users(user_ids, cfg)
    notes = sel.notes
    seen_train, seen_test, pool, test = {}, {}, {}, {}
    counts = dict.fromkeys(
        (
            "seen_train",
            "seen_test",
            "seen_dropped",
            "seen_unscored_users",
            "unseen_shots",
            "unseen_test",
            "unseen_dropped",
            "unseen_left_out_users",
            "unseen_left_out_comparisons",
        ),
        0,
    )
    for u in sel.seen:
        rng = user_rng(cfg.seed, STAGE_SEEN_TEXTS, u)
        tr, te, dr = split_seen_by_text(
            sel.groups[u], chosen_hash, rejected_hash, cfg.test_fraction, rng
        )
        seen_train[u], seen_test[u] = tr, te
        counts["seen_train"] += len(tr)
        counts["seen_test"] += len(te)
        counts["seen_dropped"] += len(dr)
        counts["seen_unscored_users"] += int(len(te) == 0)
    unseen = []
    for u in sel.unseen:
        rows = sel.groups[u][user_rng(cfg.seed, STAGE_SHOTS, u).permutation(len(sel.groups[u]))]
        shots, rest = rows[: cfg.candidate_shots], rows[cfg.candidate_shots :]
        known = texts_of(shots, chosen_hash, rejected_hash)
        keep = rest[
            new_item_mask([chosen_hash[i] for i in rest], [rejected_hash[i] for i in rest], known)
        ]
        if len(shots) < cfg.candidate_shots or len(keep) < cfg.min_test:
            counts["unseen_left_out_users"] += 1
            counts["unseen_left_out_comparisons"] += len(rows)
            continue
        unseen.append(u)
        pool[u], test[u] = shots, keep
        counts["unseen_shots"] += len(shots)
        counts["unseen_test"] += len(keep)
        counts["unseen_dropped"] += len(rest) - len(keep)
    c = counts
    notes.append(
        f"seen users split by text: {c['seen_train']} training and {c['seen_test']} test pairs kept, "
        f"{c['seen_dropped']} pairs with one text on each side dropped"
        + (
            f"; {c['seen_unscored_users']} seen users could not be split so (all their pairs train, not scored)"
            if c["seen_unscored_users"]
            else ""
        )
    )
    notes.append(
        f"unseen users: {c['unseen_shots']} candidate shots ({cfg.candidate_shots} per user), "
        f"{c['unseen_test']} fixed test pairs sharing no text with them, {c['unseen_dropped']} pairs that do dropped"
        + (
            f"; {c['unseen_left_out_users']} unseen users with fewer than {cfg.min_test} such test pairs "
            f"(or fewer than {cfg.candidate_shots} shots) left out"
            if c["unseen_left_out_users"]
            else ""
        )
    )
    if not unseen:
        raise InvalidInputError(
            f"no unseen user has {cfg.candidate_shots} candidate shots and {cfg.min_test} test "
            "comparisons sharing no text with them"
        )
    return RewardSplit(
        sel.owner, sel.seen, unseen, seen_train, seen_test, pool, test, notes, counts
    )


def split_by_comparison(
    user_ids: Sequence[str],
    config: ProtocolConfig | None = None,
    chosen_hash: Sequence[str] | None = None,
    rejected_hash: Sequence[str] | None = None,
) -> RewardSplit:
    """The old split, by comparison: seen users' shuffled comparisons cut ``train_fraction`` /
    rest into train / test, unseen users' in half into a shot pool / test. The users (steps 1-3)
    are the same as :func:`split_by_text`'s for the same config. Given the texts' hashes,
    ``counts["seen_test_new_items"]`` says how many seen test pairs share no text with the
    user's training pairs."""
    cfg = config or ProtocolConfig()
    sel = _select_users(user_ids, cfg)
    seen_train, seen_test, pool, test = {}, {}, {}, {}
    for u in sel.seen:
        rows = sel.groups[u][user_rng(cfg.seed, STAGE_SEEN, u).permutation(len(sel.groups[u]))]
        n_train = min(max(1, int(round(len(rows) * cfg.train_fraction))), len(rows) - 1)
        seen_train[u], seen_test[u] = rows[:n_train], rows[n_train:]
    for u in sel.unseen:
        rows = sel.groups[u][user_rng(cfg.seed, STAGE_UNSEEN, u).permutation(len(sel.groups[u]))]
        half = len(rows) // 2
        pool[u], test[u] = rows[:half], rows[half:]
    counts = {
        "seen_train": int(sum(len(r) for r in seen_train.values())),
        "seen_test": int(sum(len(r) for r in seen_test.values())),
    }
    if chosen_hash is not None and rejected_hash is not None:
        counts["seen_test_new_items"] = int(
            sum(
                new_item_mask(
                    [chosen_hash[i] for i in seen_test[u]],
                    [rejected_hash[i] for i in seen_test[u]],
                    texts_of(seen_train[u], chosen_hash, rejected_hash),
                ).sum()
                for u in sel.seen
            )
        )
    return RewardSplit(
        sel.owner, sel.seen, sel.unseen, seen_train, seen_test, pool, test, sel.notes, counts
    )


def make_split(user_ids: Sequence[str], config: ProtocolConfig | None = None) -> RewardSplit:
    """The old split by comparison (:func:`split_by_comparison`), under its old name: ``persona
    bench onboarding`` still splits this way."""
    return split_by_comparison(user_ids, config)


def new_item_mask(
    chosen_hash: Sequence[str], rejected_hash: Sequence[str], known: Iterable[str]
) -> np.ndarray:
    """True for each comparison whose two texts are both absent from ``known`` (the texts of the
    user's training comparisons or shots)."""
    known_set = set(known)
    return np.array(
        [c not in known_set and r not in known_set for c, r in zip(chosen_hash, rejected_hash)],
        dtype=bool,
    )


def texts_of(
    rows: np.ndarray, chosen_hash: Sequence[str], rejected_hash: Sequence[str]
) -> set[str]:
    """The content hashes of both texts of each comparison in ``rows``."""
    return {chosen_hash[i] for i in rows} | {rejected_hash[i] for i in rows}
