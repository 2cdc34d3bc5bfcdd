"""Teacher-ish words and sentence templates for the benchmark's generated text.

Everything the data set writes (memory content, lesson plans) and everything
the load generator asks for (recall queries, lesson searches) is drawn from
these lists, so queries match a realistic share of the stored text.
"""

from __future__ import annotations

import random

# Words of short random memories and two-word queries (bench/recall_commit.py,
# bench/recall_filters.py): common enough that queries match many memories.
FILLER_WORDS = (  # noqa: SIM905
    "student lesson quiz parents fractions reading essay lab group plan week notes room "
    "homework rubric seating behaviour attendance project feedback calm visual"
).split()

# One string each, split: a name per line would be a hundred lines of noise.
FIRST_NAMES = (  # noqa: SIM905
    "Ada Alan Grace Marie James Rosa Nikola Katherine Carl Maya Jorge Amara Lin Priya Tomas "
    "Fatima Noah Olivia Liam Emma Sofia Mateo Aisha Hiro Yuki Chen Elena Omar Zara Kofi Ines "
    "Lucas Nora Diego Leila Samuel Hana Ivan Mei Arjun Chloe Ethan Amina Felix Greta Hugo Iris"
).split()
LAST_NAMES = (  # noqa: SIM905
    "Lovelace Turing Hopper Curie Baldwin Parks Tesla Johnson Sagan Angelou Garcia Okafor Wei "
    "Patel Novak Haddad Smith Brown Jones Miller Davis Lopez Wilson Anderson Thomas Moore Martin "
    "Lee Walker Hall Young King Wright Scott Green Adams Baker Nelson Carter Mitchell Perez Roberts"
).split()
SCHOOLS = (
    "Lincoln Middle School",
    "Roosevelt High School",
    "Maple Elementary",
    "Riverside Academy",
    "Oak Grove Middle School",
    "Jefferson High School",
    "Cedar Park Elementary",
    "Hillside STEM Academy",
    "Westview Middle School",
    "Harbor View High School",
)
DEPARTMENTS = ("Mathematics", "Science", "English", "Social Studies", "Arts", "World Languages")

# (name, parent name or None, description)
SUBJECTS = (
    ("Mathematics", None, "Number, algebra, geometry and data"),
    ("Algebra", "Mathematics", "Expressions, equations and functions"),
    ("Geometry", "Mathematics", "Shapes, angles, area and volume"),
    ("Statistics", "Mathematics", "Data, probability and graphs"),
    ("Science", None, "Life, earth and physical science"),
    ("Biology", "Science", "Cells, organisms and ecosystems"),
    ("Chemistry", "Science", "Matter and its reactions"),
    ("Physics", "Science", "Forces, energy and motion"),
    ("Earth Science", "Science", "Weather, rocks and the solar system"),
    ("English Language Arts", None, "Reading, writing, speaking and listening"),
    ("Reading", "English Language Arts", "Fluency, comprehension and literature"),
    ("Writing", "English Language Arts", "Narrative, informative and persuasive writing"),
    ("History", None, "World and national history"),
    ("World History", "History", "Ancient to modern civilisations"),
    ("US History", "History", "From colonies to the present"),
    ("Geography", None, "Maps, places and human geography"),
    ("Art", None, "Drawing, painting and art history"),
    ("Music", None, "Performance, theory and listening"),
    ("Computer Science", None, "Programming and computational thinking"),
    ("Spanish", None, "Spanish language and culture"),
)

PROFILES = (
    ("Lesson Planner", "Drafts weekly lesson plans", "gpt-4o-2024-08-06"),
    ("Grading Assistant", "Suggests rubric-based feedback", "gpt-4o-mini-2024-07-18"),
    ("Classroom Coach", "Behaviour and engagement ideas", "gpt-4o-2024-08-06"),
    ("Parent Communicator", "Drafts messages to families", "gpt-4o-mini-2024-07-18"),
    ("Differentiation Helper", "Adapts material for every learner", "gpt-4o-2024-08-06"),
    ("Assessment Builder", "Writes quizzes and exit tickets", "claude-3-5-sonnet-20241022"),
)
CAPABILITIES = (
    ("lesson_planning", "Writes lesson plans from objectives"),
    ("differentiation", "Adapts activities for mixed-ability classes"),
    ("rubric_feedback", "Drafts feedback against a rubric"),
    ("engagement_ideas", "Suggests engagement strategies"),
    ("quiz_writing", "Writes quiz questions at a chosen level"),
    ("family_messages", "Drafts notes home in plain language"),
)

TOPICS = (
    "fractions",
    "long division",
    "decimals",
    "place value",
    "multiplication facts",
    "ratios and proportions",
    "linear equations",
    "two-step equations",
    "area and perimeter",
    "volume of prisms",
    "angles and triangles",
    "probability",
    "graphing data",
    "the Pythagorean theorem",
    "photosynthesis",
    "the water cycle",
    "cell structure",
    "ecosystems and food webs",
    "plate tectonics",
    "the solar system",
    "weather and climate",
    "states of matter",
    "chemical reactions",
    "Newton's laws",
    "electric circuits",
    "the human body",
    "lab safety",
    "the scientific method",
    "persuasive essays",
    "narrative writing",
    "poetry analysis",
    "figurative language",
    "main idea and details",
    "reading fluency",
    "vocabulary building",
    "grammar and punctuation",
    "research skills",
    "citing sources",
    "the American Revolution",
    "the Civil War",
    "ancient Egypt",
    "the Roman Empire",
    "the Industrial Revolution",
    "civil rights",
    "map skills",
    "climate zones",
    "coding loops",
    "conditionals in Scratch",
    "color theory",
    "rhythm and tempo",
    "Spanish verb conjugation",
)
FORMATS = (
    "bullet points with timings",
    "a one-page outline",
    "numbered steps",
    "a table of activities",
    "short paragraphs",
    "a checklist",
    "a slide-by-slide plan",
)
GROUPS = (
    "English language learners",
    "on an IEP",
    "reading below grade level",
    "in the gifted program",
    "new to the school",
    "often absent",
    "easily distracted after lunch",
)
SUPPORTS = (
    "visual aids",
    "sentence starters",
    "extra time",
    "manipulatives",
    "graphic organizers",
    "peer partners",
    "audio versions of texts",
    "chunked instructions",
    "frequent check-ins",
    "worked examples",
    "word banks",
)
ACTIVITIES = (
    "group work",
    "independent reading",
    "labs",
    "quizzes",
    "warm-ups",
    "exit tickets",
    "class discussions",
    "projects",
    "station rotations",
    "homework",
    "think-pair-share",
    "gallery walks",
)
TONES = ("friendly and encouraging", "direct and concise", "warm but specific", "formal")
DAYS = ("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays")
MONTHS = ("September", "October", "November", "December", "January", "March", "April", "May")
RESOURCES = (
    "a class set of fraction tiles",
    "twelve Chromebooks",
    "a document camera",
    "a small classroom library",
    "microscopes for every pair",
    "a cart of graphing calculators",
    "a 3D printer in the library",
    "whiteboards for every student",
)
EVENTS = ("A fire drill", "Picture day", "The science fair", "A school assembly", "State testing")

CATEGORIES = (
    "preference",
    "class_context",
    "fact",
    "student_need",
    "goal",
    "schedule",
    "feedback",
    "resource",
)
# How often each category is written, in the order above.
CATEGORY_WEIGHTS = (0.22, 0.2, 0.18, 0.12, 0.1, 0.07, 0.06, 0.05)
TAGS = (
    "format",
    "tone",
    "math",
    "science",
    "ela",
    "history",
    "grade-6",
    "grade-7",
    "grade-8",
    "grade-10",
    "ell",
    "iep",
    "homework",
    "assessment",
    "behaviour",
    "resources",
    "schedule",
    "parents",
    "labs",
    "reading",
)
SOURCES = ("conversation", "lesson_planner", "feedback", "import", "onboarding")
GRADES = ("3", "4", "5", "6", "7", "8", "9", "10", "11", "12")
SECTIONS = "ABCD"


def _class_name(r: random.Random) -> str:
    return f"{r.choice(GRADES)}{r.choice(SECTIONS)}"


def _sentence(r: random.Random, category: str) -> str:
    ch = r.choice
    if category == "preference":
        return ch(
            (
                f"Prefers lesson plans as {ch(FORMATS)}.",
                f"Likes to open class with {ch(ACTIVITIES)} and close with {ch(ACTIVITIES)}.",
                f"Wants {ch(TONES)} feedback on student work about {ch(TOPICS)}.",
                f"Asks for {ch(SUPPORTS)} in every plan on {ch(TOPICS)}.",
                f"Does not want {ch(ACTIVITIES)} on {ch(DAYS)}.",
            )
        )
    if category == "class_context":
        return ch(
            (
                f"Period {r.randint(1, 7)} ({_class_name(r)}) has {r.randint(18, 34)} students;"
                f" {r.randint(2, 8)} are {ch(GROUPS)}.",
                f"Class {_class_name(r)} meets in the lab on {ch(DAYS)}.",
                f"{_class_name(r)} is in the middle of a unit on {ch(TOPICS)}.",
                f"The grade {ch(GRADES)} students respond well to {ch(ACTIVITIES)}.",
            )
        )
    if category == "student_need":
        return ch(
            (
                f"{r.randint(2, 6)} students in {_class_name(r)} need {ch(SUPPORTS)}"
                f" during {ch(ACTIVITIES)}.",
                f"One student {ch(GROUPS)} does best with {ch(SUPPORTS)}.",
                f"Students {ch(GROUPS)} struggle with {ch(TOPICS)}.",
            )
        )
    if category == "goal":
        return ch(
            (
                f"Aims to finish {ch(TOPICS)} by {ch(MONTHS)} so the class can start {ch(TOPICS)}.",
                f"Wants every student fluent in {ch(TOPICS)} before the spring assessment.",
                f"Goal this term: more {ch(ACTIVITIES)} and fewer worksheets.",
            )
        )
    if category == "schedule":
        return ch(
            (
                f"{ch(EVENTS)} on {ch(DAYS)} cuts period {r.randint(1, 7)} short.",
                f"Teaches {ch(TOPICS)} on {ch(DAYS)} and {ch(TOPICS)} on {ch(DAYS)}.",
            )
        )
    if category == "feedback":
        return ch(
            (
                f"Said the last plan on {ch(TOPICS)} ran ten minutes long.",
                f"Found the {ch(ACTIVITIES)} suggestion for {ch(TOPICS)} very helpful.",
                f"Rated the quiz on {ch(TOPICS)} too easy for {_class_name(r)}.",
            )
        )
    if category == "resource":
        return f"The school has {ch(RESOURCES)} for {ch(TOPICS)}."
    return ch(
        (
            f"Students in {_class_name(r)} struggle with {ch(TOPICS)}.",
            f"{_class_name(r)} already covered {ch(TOPICS)} last year.",
            f"The department uses {ch(FORMATS)} for shared plans on {ch(TOPICS)}.",
        )
    )


def memory_content(r: random.Random, category: str, target_chars: int) -> str:
    """One to a few sentences, 60-300 characters, about `target_chars` long."""
    text = _sentence(r, category)
    while len(text) < target_chars:
        more = _sentence(r, category if r.random() < 0.6 else r.choice(CATEGORIES))
        if len(text) + 1 + len(more) > 300:
            break
        text = f"{text} {more}"
    if len(text) < 60:
        text = f"{text} Mentioned again this week while planning {r.choice(TOPICS)}."
    return text[:300]


def recall_query(r: random.Random) -> str:
    """What an assistant asks recall for: one to four words from the same vocabulary."""
    ch = r.choice
    return ch(
        (
            ch(TOPICS),
            ch(TOPICS),
            f"{ch(TOPICS)} {ch(ACTIVITIES)}",
            f"lesson plan format {ch(TOPICS)}",
            f"{ch(SUPPORTS)} {ch(GROUPS).split()[-1]}",
            f"{ch(ACTIVITIES)} {ch(DAYS).lower()}",
        )
    )


def lesson_title(r: random.Random, topic: str) -> str:
    title = r.choice(
        (
            f"Exploring {topic.title()} with Models",
            f"Introduction to {topic.title()}",
            f"{topic.title()}: Guided Practice",
            f"Investigating {topic.title()}",
            f"{topic.title()} Review and Exit Ticket",
            f"Hands-On {topic.title()}",
        )
    )
    return title[:200]


def lesson_text(r: random.Random, topic: str) -> str:
    ch = r.choice
    parts = [
        f"Students explore {topic} through {ch(ACTIVITIES)} before {ch(ACTIVITIES)}.",
        f"Open with a five-minute warm-up on {ch(TOPICS)} to activate prior knowledge.",
        f"Offer {ch(SUPPORTS)} and {ch(SUPPORTS)} for students {ch(GROUPS)}.",
        f"Model one example of {topic}, then release students to practice in pairs.",
        f"Close with an exit ticket: two questions on {topic} and one reflection.",
        f"Extension: connect {topic} to {ch(TOPICS)} for early finishers.",
    ]
    r.shuffle(parts)
    return " ".join(parts[: r.randint(3, 6)])


def search_query(r: random.Random) -> str:
    """A lesson search: a topic, sometimes with an activity or a level."""
    ch = r.choice
    return ch((ch(TOPICS), ch(TOPICS), f"{ch(TOPICS)} {ch(ACTIVITIES)}", f"hands-on {ch(TOPICS)}"))
