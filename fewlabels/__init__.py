"""fewlabels: how good can a small CNN get when only a fraction of the training images keep their labels?"""
