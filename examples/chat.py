"""Ask the gateway a question with the official OpenAI client.

Run it from the repository root while `make run` serves: .venv/bin/python examples/chat.py
"""

import os
from pathlib import Path

from openai import OpenAI

data_dir = Path(os.environ.get("INHOUSE_DATA_DIR", "data"))
client = OpenAI(
    base_url=os.environ.get("INHOUSE_URL", "http://127.0.0.1:8000/v1"),
    api_key=(data_dir / "admin.key").read_text().strip(),
)
answer = client.chat.completions.create(
    model="smollm2-135m-instruct",
    messages=[{"role": "user", "content": "Which city is the capital of France?"}],
    temperature=0,
)
print(answer.choices[0].message.content)
