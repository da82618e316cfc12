"""The compiler: spec -> typed plan -> ``GraphModel``."""

from graphdl.compile.compiler import GraphModel, Plan, PlanStep, build, compile_spec, plan_spec

__all__ = ["GraphModel", "Plan", "PlanStep", "build", "compile_spec", "plan_spec"]
