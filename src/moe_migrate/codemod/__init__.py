"""The engine: discovery, one-pass rule execution, the Plan, atomic writes and reports.

It knows nothing of any particular rule and never imports typer, rich, torch or triton. The
public surface is small; everything else is an implementation detail:

- :func:`moe_migrate.codemod.transform.migrate_source` turns bytes into a ``FileOutcome``;
- :func:`moe_migrate.codemod.run.build_plan` turns paths into a :class:`~moe_migrate.codemod.run.Plan`;
- :mod:`moe_migrate.codemod.rule` is what rules derive from;
- :mod:`moe_migrate.codemod.testing` is what rule authors test with.
"""
