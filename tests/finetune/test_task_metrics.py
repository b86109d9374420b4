"""Task metrics against hand-worked cases and, when installed, seqeval (conlleval's rules): SST-2's
accuracy / precision / recall / F1 / confusion matrix and WNUT-17's entity-level and surface-form
scores, on adjacent, nested-looking and mistyped entities, I- without B-, and empty predictions."""
import pytest

from minispanbert.finetune.classification_metrics import classification_scores
from minispanbert.finetune.conlleval import entities, ner_scores

WORDS = [
    "Apple Inc CEO Tim Cook visited New York City and Paris".split(),
    "I love Star Wars".split(),
    "Bank of America Stadium".split(),
    "Ed met Jo".split(),
]
GOLD = [
    "B-corporation I-corporation O B-person I-person O B-location I-location I-location O B-location".split(),
    "O O B-creative-work I-creative-work".split(),
    "B-location I-location I-location I-location".split(),
    "B-person O B-person".split(),
]
PREDICTED = [
    # corporation cut short; I- without B- starts person (correct); New York | City adjacent; Paris mistyped
    "B-corporation O O I-person I-person O B-location I-location B-location O B-person".split(),
    "O O O O".split(),                                                     # an empty prediction
    "B-corporation I-corporation I-corporation B-location".split(),       # nested-looking: ORG inside LOC
    "B-person I-location B-person".split(),                                # B-x I-y: y starts a chunk
]


def test_entities_follow_conlleval_chunk_rules():
    assert entities(PREDICTED[0]) == [("corporation", 0, 1), ("person", 3, 5), ("location", 6, 8),
                                      ("location", 8, 9), ("person", 10, 11)]
    assert entities(PREDICTED[3]) == [("person", 0, 1), ("location", 1, 2), ("person", 2, 3)]
    assert entities("I-group I-group B-group I-product O I-group".split()) == [
        ("group", 0, 2), ("group", 2, 3), ("product", 3, 4), ("group", 5, 6)]
    assert entities(["O", "O"]) == [] and entities([]) == []


def test_entity_scores_hand_worked():
    scores = ner_scores(WORDS, GOLD, PREDICTED)
    # gold: corp, person, location x2 | creative-work | location | person x2                 = 8
    # predicted: corp, person, location x2, person | - | corp, location | person, location, person = 10
    # correct: Tim Cook (person); Ed, Jo (person)                                             = 3
    assert (scores["gold"], scores["predicted"], scores["correct"]) == (8, 10, 3)
    assert scores["precision"] == pytest.approx(30.0)
    assert scores["recall"] == pytest.approx(37.5)
    assert scores["f1"] == pytest.approx(2 * 30 * 37.5 / (30 + 37.5))  # = 33.33
    assert scores["per_type"]["person"] == pytest.approx(
        {"precision": 75.0, "recall": 100.0, "f1": 2 * 75 / 1.75, "gold": 3, "predicted": 4, "correct": 3})
    assert scores["per_type"]["creative-work"]["f1"] == 0.0 and scores["per_type"]["creative-work"]["predicted"] == 0
    assert set(scores["per_type"]) == {"corporation", "creative-work", "location", "person"}


def test_surface_forms_count_each_distinct_entity_once():
    words = [["Paris"], ["Paris", "is", "nice"], ["Tim"], ["Paris"], ["Hi", "Tim"]]
    gold = [["B-location"], ["B-location", "O", "O"], ["B-person"], ["B-location"], ["O", "O"]]
    predicted = [["B-location"], ["O", "O", "O"], ["B-location"], ["B-location"], ["O", "B-person"]]
    scores = ner_scores(words, gold, predicted)
    assert (scores["gold"], scores["predicted"], scores["correct"]) == (4, 4, 2)
    # gold {(Paris, location), (Tim, person)}; predicted {(Paris, location), (Tim, location), (Tim, person)};
    # correct {(Paris, location)} only: (Tim, person) is a gold form, but predicted where it is not gold
    assert scores["surface_form"] == pytest.approx(
        {"precision": 100 / 3, "recall": 50.0, "f1": 40.0, "gold": 2, "predicted": 3, "correct": 1})


def test_all_empty_predictions_score_zero_not_nan():
    scores = ner_scores(WORDS, GOLD, [["O"] * len(w) for w in WORDS])
    assert (scores["precision"], scores["recall"], scores["f1"], scores["predicted"]) == (0.0, 0.0, 0.0, 0)
    assert scores["surface_form"]["f1"] == 0.0


def test_mismatched_lengths_are_one_line_errors():
    with pytest.raises(ValueError, match="sentence 1 has 4 words, 4 gold and 3 predicted tags"):
        ner_scores(WORDS, GOLD, [PREDICTED[0], PREDICTED[1][:3], PREDICTED[2], PREDICTED[3]])
    with pytest.raises(ValueError, match="4 sentences of words but 4 gold and 3 predicted"):
        ner_scores(WORDS, GOLD, PREDICTED[:3])


@pytest.mark.parametrize("predicted", [PREDICTED, [["O"] * len(w) for w in WORDS], GOLD],
                         ids=["mixed", "empty", "perfect"])
def test_entity_scores_equal_seqeval(predicted):
    seqeval = pytest.importorskip("seqeval.metrics")
    ours = ner_scores(WORDS, GOLD, predicted)
    assert ours["precision"] == pytest.approx(100 * seqeval.precision_score(GOLD, predicted, zero_division=0))
    assert ours["recall"] == pytest.approx(100 * seqeval.recall_score(GOLD, predicted, zero_division=0))
    assert ours["f1"] == pytest.approx(100 * seqeval.f1_score(GOLD, predicted, zero_division=0))
    report = seqeval.classification_report(GOLD, predicted, output_dict=True, zero_division=0)
    for entity_type, theirs in report.items():
        if "avg" in entity_type:
            continue
        mine = ours["per_type"][entity_type]
        assert (mine["precision"], mine["recall"], mine["f1"], mine["gold"]) == pytest.approx(
            (100 * theirs["precision"], 100 * theirs["recall"], 100 * theirs["f1-score"], theirs["support"])), entity_type


def test_classification_scores_hand_worked():
    gold = [1, 1, 1, 1, 0, 0]
    predicted = [1, 1, 0, 0, 1, 0]
    scores = classification_scores(gold, predicted)
    assert scores["confusion"] == [[1, 1], [2, 2]]  # rows gold, columns predicted
    assert scores["accuracy"] == pytest.approx(50.0)
    assert scores["precision"] == pytest.approx(200 / 3)  # 2 of the 3 predicted positives
    assert scores["recall"] == pytest.approx(50.0)        # 2 of the 4 gold positives
    assert scores["f1"] == pytest.approx(400 / 7)
    none_positive = classification_scores([1, 0], [0, 0])
    assert (none_positive["precision"], none_positive["recall"], none_positive["f1"]) == (0.0, 0.0, 0.0)
    assert none_positive["accuracy"] == 50.0
