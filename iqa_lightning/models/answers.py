"""The level answer as a training target: "The quality of the image is <level>." after the score
question, trained with the next-token loss on its tokens (Q-Align, DeQA-Score).

Q-Align and DeQA-Score train the whole answer, not only its level word: Q-Align the next-token
cross-entropy on every answer token (q_align/model/modeling_mplug_owl2.py:336-341), DeQA-Score the
same with the level token taken out of the cross-entropy and trained by a KL term instead
(src/model/modeling_mplug_owl2.py:462-497). :class:`LevelAnswers` encodes one such conversation
per image with the backbone's own chat template and labels, and returns that loss through the
scorer's pixel prompt, feature prompter and backbone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: The answer of Q-Align's and DeQA-Score's training files (gen_soft_label.py config.json
#: ``answer``; Q-Align train_koniq.json): the answer prefix, the level word and a full stop.
ANSWER = "{prefix} {word}."


class LevelAnswers:
    """Next-token loss on the level answer of each image, through an LMM word scorer.

    Args:
        scorer: A scorer with ``backbone`` (chat template, tokenizer, ``lm_loss``), ``prompt``
            (the pixel prompt), ``features(instructions)`` and a word head (question, answer
            prefix, level words and their token ids): an
            :class:`~iqa_lightning.models.scorer.LMMWordScorer`.
        loss: ``module.loss`` name, for error messages.

    Raises:
        ValueError: The scorer cannot generate the answer conversation, or a level word is not
            the single token the head reads inside the answer; the message names it.
    """

    def __init__(self, scorer, loss: str) -> None:
        missing = [a for a in ("backbone", "prompt", "features") if not hasattr(scorer, a)]
        if missing or scorer.word_head is None:
            raise ValueError(
                f"module.loss={loss} trains the level answer's tokens; {type(scorer).__name__} "
                "is not a language-model word scorer (it has no backbone, prompt or word head)"
            )
        self.scorer = scorer
        self.loss = loss
        self._encoded: dict[tuple[int, bool], tuple[list[int], list[int]]] = {}

    @property
    def head(self):
        return self.scorer.word_head

    def answer(self, level: int) -> str:
        """The answer text of level index ``level`` (0 = the head's first word)."""
        return ANSWER.format(prefix=self.head.answer_prefix, word=self.head.words[level])

    def encode(self, level: int, mask_level: bool) -> tuple[list[int], list[int]]:
        """Ids and labels of the score question answered with level ``level``.

        Labels are -100 except on the answer's tokens (and its end-of-turn token); with
        ``mask_level`` the level word's token is -100 too (DeQA-Score trains it by KL).
        """
        key = (int(level), bool(mask_level))
        if key in self._encoded:
            return self._encoded[key]
        backbone, head = self.scorer.backbone, self.head
        text, spans = backbone.render_conversation([(head.question, self.answer(level))])
        ids, offsets = backbone.encode_with_offsets(text)
        start = spans[0][0] + len(backbone.template.answer_lead) + len(head.answer_prefix) + 1
        word = (start, start + len(head.words[level]))
        if text[word[0] : word[1]] != head.words[level]:
            raise ValueError(f"module.loss={self.loss}: cannot place the level word in {text!r}")
        labels, at_word = [], []
        for token, (begin, end) in zip(ids, offsets, strict=True):
            answer = end > begin and any(s < end and begin < e for s, e in spans)
            in_word = end > begin and word[0] < end and begin < word[1]
            if in_word:
                at_word.append(token)
            labels.append(-100 if not answer or (mask_level and in_word) else token)
        expected = int(head.token_ids[level])
        if at_word != [expected]:
            pieces = backbone.tokenizer.convert_ids_to_tokens(at_word)
            raise ValueError(
                f"module.loss={self.loss}: inside the answer {self.answer(level)!r} the level "
                f"word {head.words[level]!r} is the tokens {pieces}, not the one token the score "
                "head reads after the answer prefix; choose level words that stay one token"
            )
        self._encoded[key] = (list(ids), labels)
        return self._encoded[key]

    def loss_of(
        self, pixels: torch.Tensor, levels: Sequence[int], mask_level: bool
    ) -> torch.Tensor:
        """Next-token cross-entropy (fp32) over the answer tokens of the images, averaged over
        every labelled token of the batch (the references' ``CrossEntropyLoss()``).

        Args:
            pixels: ``[B, 3, R, R]`` in [0, 1].
            levels: ``B`` level indices (0 = the head's first word).
            mask_level: Leave the level token out (DeQA-Score).
        """
        scorer = self.scorer
        encoded = [self.encode(int(level), mask_level) for level in levels]
        ids, mask, labels = scorer.backbone.pad_conversations(encoded)
        with scorer.features([self.head.question] * pixels.shape[0]):
            return scorer.backbone.lm_loss(scorer.prompt(pixels), ids, mask, labels)


__all__ = ["ANSWER", "LevelAnswers"]
