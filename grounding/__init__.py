"""Grounding: ask a VLM about the instances of a reconstructed `iggt.scene.Scene`.

`highlight` draws instances for a VLM, `vlm` holds the backends (and `vlm.replies` reads what
they say), `spatial` computes relations and locations from the 3D geometry, `naming` names
every instance, `targets` reads what a question asks for, and `agent.answer` answers a question in
"verify" mode (yes/no per instance, the paper's method) or "agent" mode (a tool-using
planner). Importing the package is cheap; import the submodule you need.
"""
