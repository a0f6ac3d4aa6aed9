"""Benchmarks behind ``persona bench ...``.

``persona_engine.bench.reward`` is the reward-model benchmark (the evaluation protocol of the
design notes): splits in :mod:`.protocol`, accuracies and bootstrap intervals in :mod:`.metrics`,
onboarding through the engine in :mod:`.engine_path`, the result document in
:mod:`.reward_summary`, tables and plot in :mod:`.report`, the per-user and residual baselines in
:mod:`.baselines`.
"""
