"""Mean teacher (Tarvainen & Valpola 2017): the student's class probabilities on a strong view match the weight
average's on a weak view (squared error summed over classes; no threshold). Needs train.ema (fewlabels.methods)."""
from fewlabels.methods import base


class Method(base.Method):
    def loss(self, student, x, views, teacher, index):
        target, logits = base.teacher_weak_student_strong(student, x, views, teacher)
        self.give(index, target.argmax(1), 1.0)  # every image counts, with weight 1
        return (logits.softmax(1) - target).pow(2).sum(1).mean()
