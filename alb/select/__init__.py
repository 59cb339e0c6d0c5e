"""Selection algorithms: pure functions on arrays (numpy in, numpy out; torch inside, on
the GPU when one is present). They never see a model."""

from alb.select._backend import max_pairwise_distance
from alb.select.classwise import (SymmetricKLDistances, cdal_contexts, top_box_per_class, uwe_image_embedding)
from alb.select.kcenter import kcenter_from_labelled, kcenter_greedy, kcenter_on_distances
from alb.select.kmeanspp import badge_seeding, d2_sampling, factorised_seeding, kmeanspp_seeding
from alb.select.noris import noris_greedy, noris_select, similarity_from_dists, similarity_from_sq_dists
from alb.select.objects import ObjectDistances, object_distances
from alb.select.ppal import (ccms_similarity, cosine_similarity_matrix, dcus_weights, jaccard_similarity,
                             kcenter_kmedoids)

__all__ = ["ObjectDistances", "SymmetricKLDistances", "badge_seeding", "ccms_similarity", "cdal_contexts",
           "cosine_similarity_matrix", "d2_sampling", "dcus_weights", "factorised_seeding", "jaccard_similarity",
           "kcenter_from_labelled", "kcenter_greedy", "kcenter_kmedoids", "kcenter_on_distances", "kmeanspp_seeding",
           "max_pairwise_distance", "noris_greedy", "noris_select", "object_distances", "similarity_from_dists",
           "similarity_from_sq_dists", "top_box_per_class", "uwe_image_embedding"]
