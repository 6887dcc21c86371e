"""The README's example outputs, from what ``python -m evals.readme_examples`` recorded running them
(docs/results/readme-examples)."""

from __future__ import annotations

from .common import _load

FOLDER = "readme-examples"
LINK = f"[results](docs/results/{FOLDER}/results.json)"


def quickstart() -> str:
    """The quickstart's printed lines, with the machine, the query precision and float32's lines."""
    saved = _load(FOLDER)
    cpu, precision = saved["machine"]["cpu"], saved["query_precision"]
    float32 = saved["quickstart_float32"]
    if precision == "float32":
        how = "its queries in float32, as on a CPU where bfloat16 does not measure faster"
    else:
        differs = [b for a, b in zip(saved["quickstart"], float32) if a != b]
        how = (
            f"its queries in {precision} there, as on any CPU where bfloat16 measures faster; in float32 "
            + ("the same lines" if not differs else "the line " + "; ".join(f"`{line}`" for line in differs))
        )
    dense = ", ".join(f"{s:g}" for s in saved["dense_scores"])
    return (
        f"prints (run on this project's {cpu} machine with the default model, {how};\nanother CPU may differ "
        f"in the last digit; {LINK}):\n\n```text\n" + "\n".join(saved["quickstart"]) + "\n```\n\n"
        "A hybrid hit's score is the fused one, in [0, 1] relative to the query's candidates;\n"
        "`retriever.search(query, hybrid=False)` runs the dense funnel alone and scores by the fine view's cosine\n"
        f"(here {dense}).\n"
    )


def passages() -> str:
    """The passages example's hit, how many passages its document became, and the machine."""
    saved = _load(FOLDER)
    p = saved["passages"]
    return (
        f'(that output: `({p["doc_id"]!r}, {p["passage"]})`, the passage holding "time zones": `{p["model"]}`,\n'
        f"which reads {p['tokens_per_passage']} tokens of a text, split the manual into "
        f"{p['passages_of_document']} passages; on this project's {saved['machine']['cpu']} machine, {LINK}.)\n"
    )
