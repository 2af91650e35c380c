"""The three semantic granularities of the 4D LangSplat format, in their fixed order (one home for the names)."""

LEVELS: tuple[str, str, str] = ("small", "middle", "large")
