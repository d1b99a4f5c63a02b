"""The project's own tasks (manipulation, partial observability, disturbance, multi-agent, ...).

Each module is imported lazily through its registered entry point (see :mod:`envs`), so an optional
backend such as pybullet is only needed when its task is built.
"""
