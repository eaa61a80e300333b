"""Texts for multilingual parity checks: a small hand-written set in many scripts (shipped, so an export can
check itself anywhere) and a larger mixed set drawn from ../shared/data when it is present (corpora and *train*
splits only: the STS-B test sets and LCQMC test, which the eval suite scores, are never used; LCQMC has no train
split here, so its dev split stands in)."""
from __future__ import annotations

import csv
import random
from pathlib import Path

SAMPLES = [
    # Japanese
    "東京駅から新幹線で大阪まで約二時間半かかります。",
    "今日はとても暑いので、冷たいお茶を飲みたいです。",
    "このレストランのラーメンは本当に美味しい！",
    "機械学習モデルをスマートフォンで動かすには、量子化が欠かせません。",
    # Korean
    "서울은 대한민국의 수도이며 인구가 가장 많은 도시입니다.",
    "내일 아침 아홉 시에 회의가 있습니다.",
    "이 영화는 정말 재미있었어요. 다시 보고 싶어요!",
    # Arabic
    "القاهرة هي عاصمة مصر وأكبر مدنها.",
    "أحب قراءة الكتب في المساء مع فنجان من القهوة.",
    "كيف يمكنني تخفيض ضغط الدم بشكل طبيعي؟",
    # Russian
    "Москва — столица России и крупнейший город страны.",
    "Как приготовить настоящий борщ с чесноком и сметаной?",
    "Поезд отправляется с третьей платформы в 18:45.",
    # Other scripts and languages
    "भारत की राजधानी नई दिल्ली है।",
    "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "ירושלים היא עיר עתיקה עם היסטוריה ארוכה.",
    "Die Katze schläft auf dem warmen Fensterbrett in der Sonne.",
    "Le train pour Lyon part à quinze heures depuis la gare de Lyon à Paris.",
    "¿Dónde está la biblioteca más cercana? Necesito devolver tres libros.",
    "A reunião foi adiada para a próxima terça-feira às dez horas.",
    "Hà Nội là thủ đô của Việt Nam, nổi tiếng với phở và cà phê trứng.",
    "İstanbul, Avrupa ile Asya arasında bir köprüdür.",
    "Kiswahili ni lugha inayozungumzwa katika nchi nyingi za Afrika Mashariki.",
    "Zażółć gęślą jaźń — polskie znaki diakrytyczne.",
    # Emoji, mixed case, symbols, code, numbers
    "I love this phone 😍📱 but the battery 🔋 dies by noon 😭",
    "Great job team!!! 🎉🎉🎉 See you at the after-party 🍕🍻",
    "👍🏽 works for me, 👎 not for them; 👨‍👩‍👧 family plan?",
    "tHiS iS mIxEd CaSe TeXt WiTh SHOUTING and whispering",
    "NASA, the FBI and UNESCO all use ACRONYMS in THEIR reports.",
    "def add(a, b):\n    return a + b  # a tiny Python function",
    "SELECT name, COUNT(*) FROM users WHERE age > 30 GROUP BY name;",
    "Visit https://example.com/path?q=1&lang=zh-CN for details, or mail info@example.org.",
    "Order #4521: 3 × 2.50 € = 7.50 €, paid on 2024-03-15 at 14:07.",
    "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ　１２３ and ½ ⅓ ¼ fractions, ﬁ ligatures, ℌ",
    "tabs\tand\nnewlines\r\nand    many     spaces   here",
    # Mixed Chinese / English
    "我在用 Python 写一个 embedding 模型的 demo。",
    "这款 iPhone 的电池续航比上一代好很多。",
    "请把 report.pdf 发到我的 email，谢谢！",
    "如何在 Linux 上安装 CUDA 驱动？",
    "北京时间 2024 年 5 月 1 日上午 10 点，发布会正式开始。",
    # Traditional Chinese and Cantonese
    "臺北是臺灣的政治與經濟中心。",
    "我哋聽日去飲茶好唔好？",
]

LONG_PARAGRAPH = (
    "Offline semantic search on small devices asks for three things at once: a model that understands the "
    "language people actually write, a runtime that fits in memory beside everything else the device does, and "
    "an index that survives a crash without losing what was saved. Quantising weights to eight or four bits "
    "shrinks a sentence encoder several times over, and block-wise scales keep most of the accuracy, because "
    "each small group of weights gets its own range. ")
LONG_ZH = ("离线语义搜索需要一个能理解用户真实语言的模型，一个能与设备上其他程序一起放进内存的运行时，"
           "以及一个在崩溃后不会丢失已保存内容的索引。把权重量化到八位或四位，可以让句向量模型缩小数倍，"
           "而分块的缩放系数让每一小组权重都有自己的取值范围，因此大部分精度得以保留。")


def long_samples() -> list[str]:
    """Texts of a few hundred tokens, and two past a 512-token window (en and zh)."""
    return [LONG_PARAGRAPH * 2, LONG_ZH * 3, LONG_PARAGRAPH + LONG_ZH, LONG_PARAGRAPH * 8, LONG_ZH * 10]


def builtin_texts() -> list[str]:
    """The shipped multilingual samples, short and long."""
    return SAMPLES + long_samples()


def _tsv_column(path: Path, column: int, skip_header: bool) -> list[str]:
    with open(path, encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows = rows[1:] if skip_header else rows
    return [r[column] for r in rows if len(r) > column and r[column].strip()]


def shared_texts(data: Path, per_source: int = 100, seed: int = 0) -> list[str]:
    """A reproducible sample of en_corpus, zh_corpus, LCQMC dev, STS-B en and STS-B zh train sentences
    (per_source each, where present), spread over lengths: a quarter of each source are its longest sentences."""
    rng = random.Random(seed)
    sources = [
        (data / "en_corpus" / "en_sentences.tsv", lambda p: _tsv_column(p, 1, True)),
        (data / "zh_corpus" / "zh_sentences.tsv", lambda p: _tsv_column(p, 1, True)),
        (data / "lcqmc" / "dev.txt", lambda p: _tsv_column(p, 0, False)),
        (data / "stsb_zh_cnsd" / "STS-B.train.data", lambda p: _tsv_column(p, 0, False)),
        (data / "stsb_en" / "stsb-en-train.csv", _stsb_en),
    ]
    out: list[str] = []
    for path, read in sources:
        if not path.is_file():
            continue
        texts = list(dict.fromkeys(read(path)))
        longest = sorted(texts, key=len)[-max(1, per_source // 4) * 20:]
        picked = rng.sample(longest, min(len(longest), per_source // 4))
        chosen = set(picked)
        rest = [t for t in texts if t not in chosen]
        picked += rng.sample(rest, min(len(rest), per_source - len(picked)))
        out += picked
    return out


def _stsb_en(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [row[0] for row in csv.reader(f) if row and row[0].strip()]


def mixed_texts(data: Path | None, per_source: int = 100) -> list[str]:
    """shared_texts (when data is present) + the shipped multilingual samples."""
    return (shared_texts(data, per_source) if data and Path(data).is_dir() else []) + builtin_texts()


def mixed_texts_described(data: Path | None, per_source: int = 100) -> tuple[list[str], str]:
    """mixed_texts and a one-line description of where they came from (for the manifest)."""
    shared = shared_texts(data, per_source) if data and Path(data).is_dir() else []
    what = "shipped multilingual samples (short and long)"
    if shared:
        what = (f"{len(shared)} sentences sampled from the shared corpora and train splits (en_corpus, zh_corpus, "
                f"LCQMC dev, STS-B en/zh train; seed 0) + " + what)
    return shared + builtin_texts(), what
