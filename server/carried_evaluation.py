"""One exchange a round: the evaluation of round r's model rides on round r+1's train message.

The model a site trains on in round r+1 is the one round r produced, so the site can evaluate it
first and reply with both (`evaluate-received`): a round then costs one exchange instead of two
(in a deployment, one ClientApp process, its start and its polls, per site). The last round's
model is evaluated by an evaluate message of its own, and so is every model under SecAgg+, whose
training is a multi-stage exchange of its own. A site whose policy refuses the evaluation still
trains; its reply then carries no evaluation.
"""

from __future__ import annotations

from flwr.app import Message, RecordDict

from shared_model.contract.messages import EVALUATION, STATEMENT


def take_carried_evaluations(replies: list[Message], questions: list[Message]) -> list[Message]:
    """Move each train reply's evaluation (with its privacy statement) out of it, as an
    evaluate reply from the same node to the same question: the train replies are left with what
    training sent, and the evaluations go through the strategy's evaluation path and its checks."""
    asked = {question.metadata.message_id: question for question in questions}
    evaluations = []
    for reply in replies:
        if reply.has_error() or EVALUATION not in reply.content:
            continue
        question = asked.get(reply.metadata.reply_to_message_id)
        metrics = reply.content.pop(EVALUATION)
        statement = reply.content.pop(STATEMENT, None)
        if question is None:  # not a reply to this round's messages: send_and_receive keeps none such
            continue
        content = RecordDict({"metrics": metrics} | ({STATEMENT: statement} if statement is not None else {}))
        evaluations.append(Message(content, reply_to=question))
    return evaluations
