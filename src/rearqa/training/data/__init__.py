"""Training data from a retrieval snapshot (rearqa.eval.bundle), one module per kind:

    groups          REAR's passage groups per question: candidates, coarse and graded labels,
                    the answer target (also the baselines' question rows and targets)
    rear_examples   what REAR's generator learns from a group: generation examples (relevant
                    and noise-resistant), the REAR input of every passage, group statistics
    chat_examples   the baselines' (rag-ft, closed-book-ft) chat-prompt examples and encoding
    batches         right-padded micro-batches of both kinds, tokenised on the spot
    distill_rows    distill: corpus windows and rag-ft prompts, every position carrying the loss
                    (as TokenRows, so imported from its module too)
    token_rows      rows tokenised once, collated into length-sorted chunks (what training uses;
                    imported from its module, so that this package stays free of torch)

Only `*-dev-train` splits are read: dev-select and test questions are held out.
"""
from rearqa.training.data.batches import chat_batch, pad_id, rear_batch
from rearqa.training.data.chat_examples import (ChatExample, closed_book_examples,
                                                encode_chat_example, rag_examples)
from rearqa.training.data.groups import (AGREEMENT_BONUS, POSITIVE_BASE, GroupPassage, TrainGroup,
                                         build_groups, choose_target, grade, keeps_unanswered,
                                         passage_input_text, question_targets, train_rows)
from rearqa.training.data.rear_examples import (GenerationExample, generation_examples, group_stats,
                                                rear_inputs)

__all__ = ["AGREEMENT_BONUS", "POSITIVE_BASE", "ChatExample", "GenerationExample", "GroupPassage",
           "TrainGroup", "build_groups", "chat_batch", "choose_target", "closed_book_examples",
           "encode_chat_example", "generation_examples", "grade", "group_stats",
           "keeps_unanswered", "pad_id", "passage_input_text", "question_targets", "rag_examples",
           "rear_batch", "rear_inputs", "train_rows"]
