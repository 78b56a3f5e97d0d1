"""Text side of a backbone: the chat template, prompts, conversations and the token ids of
answer words.

:class:`PromptEncoding` is mixed into :class:`~iqa_lightning.models.backbones.base.Backbone`;
it needs the adapter's ``template``, ``tokenizer``, ``image_token_id`` and
``num_placeholders``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ChatTemplate:
    """How a family lays out a conversation around one image.

    Attributes:
        system: Text before the first user turn.
        first_user: First user turn with ``{image}`` and ``{question}`` fields, ending where the
            assistant's answer starts.
        next_user: Later user turns, with a ``{question}`` field.
        answer_lead: Text between the end of a user turn and the answer (a space for LLaVA).
        answer_end: Text that closes an answer (the end-of-turn token).
    """

    system: str
    first_user: str
    next_user: str
    answer_lead: str
    answer_end: str

    @property
    def assistant_marker(self) -> str:
        """The text right before an answer (end of ``first_user``, after the question and any
        image that follows it)."""
        return self.first_user.rsplit("{question}", 1)[1].rsplit("{image}", 1)[-1]


#: Vicuna v1's ``USER: ... ASSISTANT: ...</s>`` conversation, as LLaVA-1.5 lays it out (no system
#: sentence, the image on its own line before the first question). Bunny and mPLUG-Owl2 speak the
#: same conversation; their templates replace only what differs (``dataclasses.replace``).
USER_ASSISTANT = ChatTemplate(
    system="",
    first_user="USER: {image}\n{question} ASSISTANT:",
    next_user="USER: {question} ASSISTANT:",
    answer_lead=" ",
    answer_end="</s>",
)


class PromptEncoding:
    """Prompt and conversation encoding of a backbone (see the module docstring)."""

    template: ChatTemplate

    def _image_placeholder(self) -> str:
        return self.tokenizer.convert_ids_to_tokens(self.image_token_id) * self.num_placeholders

    def tokenize(self, text: str) -> list[int]:
        """Ids of a prompt text (special tokens added as the family's tokenizer does)."""
        return self.tokenizer(text).input_ids

    def build_prompt(self, question: str, answer_prefix: str = "") -> str:
        """Prompt text for one image and one question, ending where the next token is read.

        With an ``answer_prefix`` the prompt ends inside the answer (``... ASSISTANT: The quality
        of the image is``); without, at the assistant marker.
        """
        t = self.template
        text = t.system + t.first_user.format(image=self._image_placeholder(), question=question)
        return text + (t.answer_lead + answer_prefix if answer_prefix else "")

    def encode_prompt(self, question: str, answer_prefix: str = "") -> torch.Tensor:
        """Token ids ``[1, L]`` of the prompt, checked to hold exactly one image's placeholders."""
        ids = torch.tensor([self.tokenize(self.build_prompt(question, answer_prefix))])
        self._check_image_tokens(ids[0])
        return ids

    def encode_prompts(
        self, questions: Sequence[str], answer_prefix: str = ""
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ids and mask ``[B, L]`` for one question per image."""
        texts = [self.build_prompt(q, answer_prefix) for q in questions]
        self.tokenizer.padding_side = "left"
        enc = self.tokenizer(texts, return_tensors="pt", padding=True)
        return enc.input_ids, enc.attention_mask

    def render_conversation(
        self, turns: Sequence[tuple[str, str]]
    ) -> tuple[str, list[tuple[int, int]]]:
        """A conversation about one image as one string in the family's format, and the
        character spans ``[start, end)`` of each answer (lead, answer text and end-of-turn).

        Args:
            turns: ``(question, answer)`` pairs; the image goes with the first question.
        """
        if not turns:
            raise ValueError("a conversation needs at least one (question, answer) turn")
        t = self.template
        text, spans = t.system, []
        for i, (question, answer) in enumerate(turns):
            if i == 0:
                text += t.first_user.format(image=self._image_placeholder(), question=question)
            else:
                text += t.next_user.format(question=question)
            start = len(text)
            text += t.answer_lead + answer + t.answer_end
            spans.append((start, len(text)))
        return text, spans

    def encode_conversation(self, turns: Sequence[tuple[str, str]]) -> tuple[list[int], list[int]]:
        """Ids and labels of a conversation about one image; labels are -100 except on answers.

        The whole conversation is tokenised as one string, so its ids are exactly what the
        tokenizer makes of the rendered text (a SentencePiece tokenizer does not see each answer
        as a new text that starts with a lone ``▁``), and a token is labelled when its characters
        lie in an answer span: each answer's tokens and its end-of-turn token.

        Args:
            turns: ``(question, answer)`` pairs; the image goes with the first question.
        """
        text, spans = self.render_conversation(turns)
        ids, offsets = self.encode_with_offsets(text)
        labels = [
            token if end > begin and any(s < end and begin < e for s, e in spans) else -100
            for token, (begin, end) in zip(ids, offsets, strict=True)
        ]
        self._check_image_tokens(torch.tensor(ids))
        return ids, labels

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids of a whole text and the character span ``[begin, end)`` of each id (a family
        that splices an image id overrides it; the spliced id spans its placeholder text)."""
        if not getattr(self.tokenizer, "is_fast", False):
            raise TypeError(
                f"{type(self).__name__}: labelling answers needs a fast tokenizer (character "
                f"offsets); {type(self.tokenizer).__name__} is not one"
            )
        enc = self.tokenizer(text, return_offsets_mapping=True)
        return list(enc.input_ids), [tuple(span) for span in enc.offset_mapping]

    def pad_conversations(
        self, encoded: Sequence[tuple[list[int], list[int]]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-pad encoded conversations to ``(ids, mask, labels)`` tensors ``[B, L]``."""
        length = max(len(ids) for ids, _ in encoded)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(encoded), length), pad, dtype=torch.long)
        mask = torch.zeros((len(encoded), length), dtype=torch.long)
        labels = torch.full((len(encoded), length), -100, dtype=torch.long)
        for row, (seq, lab) in enumerate(encoded):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
            labels[row, : len(lab)] = torch.tensor(lab)
        return ids, mask, labels

    def _check_image_tokens(self, ids: torch.Tensor) -> None:
        found = int((ids == self.image_token_id).sum())
        if found != self.num_placeholders:
            raise ValueError(
                f"{type(self).__name__}: the prompt holds {found} image tokens, the family "
                f"expects {self.num_placeholders}; check the tokenizer's image token"
            )

    def answer_token_id(self, answer_prefix: str, word: str, sep: str = " ") -> int:
        """The single token id that ``word`` becomes right after ``answer_prefix``.

        Encodes the prefix with and without ``sep + word`` and takes the difference, so the
        word is looked up in the form the model really sees (leading-space form included).

        Raises:
            ValueError: The word is not exactly one token of this tokenizer; names the word.
        """
        base = self.tokenizer(answer_prefix, add_special_tokens=False).input_ids
        full = self.tokenizer(f"{answer_prefix}{sep}{word}", add_special_tokens=False).input_ids
        extra = full[len(base) :]
        if full[: len(base)] != base or len(extra) != 1:
            pieces = self.tokenizer.convert_ids_to_tokens(extra or full)
            raise ValueError(
                f"word {word!r} is not a single token of the {self.family} tokenizer after "
                f"{answer_prefix!r} (it becomes {pieces}); choose another word"
            )
        return extra[0]

    def first_answer_token_id(self, word: str) -> int:
        """Token id of ``word`` as the first token of an answer (e.g. an option letter)."""
        return self.answer_token_id(self.template.assistant_marker, word, self.template.answer_lead)
