"""`memory-service seed-demo`: the documentation's 'Mock Data', through the service layer.

Sample lesson plans, subject categories, assistant profiles with
capabilities, users with preferences, memories and their interactions
(stores, recalls and feedback). Registry records are upserts, so running it
twice changes nothing; memories and lessons are only added for a demo user
who has none yet.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from memory_service.domain import ranking
from memory_service.domain.models import (
    AssistantProfile,
    Capability,
    Feedback,
    Lesson,
    LessonStatus,
    MemoryFilter,
    NewMemory,
    RecallQuery,
    SubjectCategory,
    User,
    UserPreferences,
)
from memory_service.domain.principal import LOCAL
from memory_service.services.admin import Admin
from memory_service.services.memories import Memories, MemoryPolicy
from memory_service.storage import session
from memory_service.storage.database import Database, PoolSettings
from memory_service.storage.encryption import FieldCipher
from memory_service.storage.lessons import LessonStore
from memory_service.storage.memories import MemoryStore
from memory_service.storage.registry import RegistryStore

USERS = [
    (
        uuid.UUID("00000000-0000-4000-8000-000000000001"),
        "ada.lovelace@lincoln-middle.example.org",
        "Ada Lovelace",
        "Lincoln Middle School",
        "Mathematics",
        ["Math"],
        ["7", "8"],
    ),
    (
        uuid.UUID("00000000-0000-4000-8000-000000000002"),
        "marie.curie@lincoln-middle.example.org",
        "Marie Curie",
        "Lincoln Middle School",
        "Science",
        ["Science"],
        ["6"],
    ),
    (
        uuid.UUID("00000000-0000-4000-8000-000000000003"),
        "james.baldwin@roosevelt-high.example.org",
        "James Baldwin",
        "Roosevelt High School",
        "English",
        ["English Language Arts"],
        ["10"],
    ),
]

SUBJECTS = [
    ("Mathematics", "Number, algebra, geometry and data", None),
    ("Science", "Life, earth and physical science", None),
    ("English Language Arts", "Reading, writing, speaking and listening", None),
    ("History", "World and national history", None),
    ("Algebra", "Expressions, equations and functions", "Mathematics"),
]

PROFILES = [
    (
        "Lesson Planner",
        "Drafts weekly lesson plans",
        "gpt-4o-2024-08-06",
        [
            ("lesson_planning", "Writes lesson plans from objectives", 10),
            ("differentiation", "Adapts activities for mixed-ability classes", 5),
        ],
    ),
    (
        "Grading Assistant",
        "Suggests rubric-based feedback",
        "gpt-4o-mini-2024-07-18",
        [("rubric_feedback", "Drafts feedback against a rubric", 10)],
    ),
    (
        "Classroom Coach",
        "Behaviour and engagement ideas",
        "gpt-4o-2024-08-06",
        [("engagement_ideas", "Suggests engagement strategies", 0)],
    ),
]

MEMORIES = [  # (user index, category, importance, tags, content, context)
    (0, "preference", 0.9, ["format"], "Prefers lesson plans as bullet points with timings.", {}),
    (
        0,
        "class_context",
        0.8,
        ["grade-7", "math"],
        "Period 3 (7B) has 28 students; four are English language learners.",
        {"class": "7B"},
    ),
    (
        0,
        "class_context",
        0.6,
        ["grade-8", "math"],
        "8A is preparing for the state algebra assessment in May.",
        {"class": "8A"},
    ),
    (
        0,
        "fact",
        0.7,
        ["fractions"],
        "Students in 7B struggle with dividing fractions.",
        {"class": "7B", "subject": "fractions"},
    ),
    (0, "preference", 0.5, ["tone"], "Likes a friendly, encouraging tone in student feedback.", {}),
    (0, "fact", 0.4, ["resources"], "The school has a class set of fraction tiles.", {}),
    (1, "preference", 0.8, ["safety"], "Always include a lab safety reminder in experiments.", {}),
    (1, "class_context", 0.7, ["grade-6"], "Grade 6 science meets in the lab on Tuesdays.", {}),
    (
        1,
        "fact",
        0.6,
        ["ecosystems"],
        "Class is starting a unit on ecosystems and food webs.",
        {"unit": "ecosystems"},
    ),
    (2, "preference", 0.9, ["reading"], "Wants discussion questions for every reading.", {}),
    (
        2,
        "class_context",
        0.6,
        ["grade-10"],
        "10th graders are reading 'Go Tell It on the Mountain'.",
        {"unit": "novel-study"},
    ),
]

LESSONS = [  # (user index, subject, profile, title, grade, content area, status, tags, text)
    (
        0,
        "Mathematics",
        "Lesson Planner",
        "Dividing Fractions with Models",
        "7",
        "Fractions",
        "published",
        ["fractions", "manipulatives"],
        "Students use fraction tiles to model division of fractions before the algorithm.",
    ),
    (
        0,
        "Algebra",
        "Lesson Planner",
        "Solving Two-Step Equations",
        "8",
        "Equations",
        "draft",
        ["equations"],
        "Balance models and inverse operations for two-step equations.",
    ),
    (
        1,
        "Science",
        "Lesson Planner",
        "Food Webs in Local Ecosystems",
        "6",
        "Ecosystems",
        "published",
        ["ecosystems", "group-work"],
        "Groups build a food web for the school pond and predict effects of removing a species.",
    ),
    (
        1,
        "Science",
        "Classroom Coach",
        "Lab Safety Scavenger Hunt",
        "6",
        "Lab Safety",
        "archived",
        ["safety"],
        "A scavenger hunt to find and explain each piece of lab safety equipment.",
    ),
    (
        2,
        "English Language Arts",
        "Lesson Planner",
        "Symbolism in Baldwin's Novel",
        "10",
        "Literary Analysis",
        "published",
        ["novel-study", "discussion"],
        "Students trace the symbolism of the mountain and discuss its meaning in small groups.",
    ),
    (
        2,
        "History",
        "Grading Assistant",
        "Harlem Renaissance Context",
        "10",
        "History",
        "draft",
        ["context"],
        "Background on the Harlem Renaissance to frame the novel.",
    ),
]


async def seed_demo(
    database_url: str,
    platform_database_url: str,
    cipher: FieldCipher | None = None,
    pooler: str = "none",
) -> dict[str, int]:
    """Seed through the service's layers; it all acts for ALL_USERS, as faraday_platform."""
    db = Database(
        PoolSettings(
            url=database_url,
            platform_url=platform_database_url,
            size=2,
            user_size=1,
            max_overflow=1,
            pooler=pooler,
        )
    )
    await db.open()
    try:
        lessons = LessonStore(db)
        admin = Admin(RegistryStore(db, cipher), lessons, None)
        memories = Memories(MemoryStore(db), MemoryPolicy())
        with session.acting_as(session.ALL_USERS):  # demo data for every demo user
            return await _seed(admin, memories)
    finally:
        await db.close()


async def _seed(admin: Admin, memories: Memories) -> dict[str, int]:
    counts = dict.fromkeys(
        (
            "users",
            "subject categories",
            "assistant profiles",
            "lessons",
            "memories",
            "interactions",
        ),
        0,
    )
    for user_id, email, name, school, department, subjects, grades in USERS:
        await admin.upsert_user(
            User(
                id=user_id,
                email=email,
                name=name,
                is_active=True,
                school=school,
                department=department,
                subjects=subjects,
                grade_levels=grades,
                custom_instructions="Keep suggestions practical for a 50-minute period.",
            )
        )
        await admin.upsert_preferences(
            UserPreferences(
                user_id=user_id,
                theme="light",
                notifications={"email": True, "digest": "weekly"},
                language="en-US",
                timezone="America/Chicago",
            )
        )
        counts["users"] += 1
    subject_ids: dict[str, int] = {}
    for name, description, parent in SUBJECTS:
        category = await admin.upsert_subject_category(
            SubjectCategory(
                id=None,
                name=name,
                description=description,
                parent_id=subject_ids[parent] if parent else None,
                is_active=True,
                metadata=None,
            )
        )
        assert category.id is not None
        subject_ids[name] = category.id
        counts["subject categories"] += 1
    profile_ids: dict[str, int] = {}
    for name, description, model, capabilities in PROFILES:
        profile = await admin.upsert_assistant_profile(
            AssistantProfile(
                id=None,
                name=name,
                description=description,
                model_version=model,
                is_active=True,
                configuration={"temperature": 0.7},
                capabilities=[Capability(n, d, None, True, p) for n, d, p in capabilities],
            )
        )
        assert profile.id is not None
        profile_ids[name] = profile.id
        counts["assistant profiles"] += 1

    fresh = {
        i
        for i, user in enumerate(USERS)
        if not (await memories.list_memories(LOCAL, MemoryFilter(user_id=user[0]), "", 1))[0]
    }
    monday = date.today() - timedelta(days=date.today().weekday())
    for n, (u, subject, assistant, title, grade, area, status, tags, text) in enumerate(LESSONS):
        if u not in fresh:
            continue
        await admin.upsert_lesson(
            Lesson(
                id=None,
                title=title,
                user_id=USERS[u][0],
                subject_category_id=subject_ids[subject],
                assistant_profile_id=profile_ids[assistant],
                grade_level=grade,
                week_of=monday + timedelta(weeks=n % 3),
                content_area=area,
                lesson_data={"subject": subject, "grade_level": grade, "text": text},
                objectives=[f"Understand {area.lower()}"],
                materials=["slides", "worksheet"],
                activities=[{"name": "warm-up", "minutes": 10}, {"name": "main", "minutes": 30}],
                assessment_criteria=["exit ticket"],
                feedback=None,
                status=LessonStatus(status),
                tags=tags,
                related_lessons=[],
            )
        )
        counts["lessons"] += 1
    stored = []
    for u, kind, importance, tags, content, context in MEMORIES:
        if u not in fresh:
            continue
        stored.append(
            await memories.store(
                LOCAL,
                NewMemory(
                    user_id=USERS[u][0],
                    assistant_profile_id=None,
                    content=content,
                    context=context,
                    importance=importance,
                    category=kind,
                    tags=tags,
                    source="seed-demo",
                    confidence=0.9,
                    expires_at=None,
                    metadata={"seeded": True},
                ),
            )
        )
        counts["memories"] += 1
        counts["interactions"] += 1
    for u in sorted(fresh):
        recalled = await memories.recall(
            LOCAL,
            RecallQuery(user_id=USERS[u][0], weights=ranking.DEFAULT_WEIGHTS, limit=3),
        )
        counts["interactions"] += len(recalled.memories)
        if recalled.memories:
            await memories.record_feedback(
                LOCAL,
                Feedback(
                    memory_id=recalled.memories[0].memory.id,
                    helpful=True,
                    rating=None,
                    comment="Spot on.",
                    context={"conversation": "demo"},
                ),
            )
            counts["interactions"] += 1
    return counts
