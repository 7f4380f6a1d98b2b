"""selfsup's random numbers (src/core/core.c) in Python, for goldens that
must draw what selfsup draws: splitmix64 seeding, xoshiro256**, Lemire's
bounded draws, ssl_rng_uniform and ssl_rng_derive."""

MASK = (1 << 64) - 1


def splitmix64(x):
    """Returns (new state, output)."""
    x = (x + 0x9E3779B97F4A7C15) & MASK
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return x, z ^ (z >> 31)


class Xoshiro:
    def __init__(self, seed):
        self.s = []
        x = seed
        for _ in range(4):
            x, v = splitmix64(x)
            self.s.append(v)

    def u64(self):
        s = self.s
        rotl = lambda v, k: ((v << k) | (v >> (64 - k))) & MASK  # noqa: E731
        result = (rotl((s[1] * 5) & MASK, 7) * 9) & MASK
        t = (s[1] << 17) & MASK
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result

    def uniform(self):
        """ssl_rng_uniform: a float32 in [0, 1) from the top 24 bits."""
        return (self.u64() >> 40) * (1.0 / 16777216.0)

    def below(self, n):
        if n <= 1:
            return 0
        m = (self.u64() & 0xFFFFFFFF) * n
        low = m & 0xFFFFFFFF
        if low < n:
            t = ((1 << 32) - n) % n
            while low < t:
                m = (self.u64() & 0xFFFFFFFF) * n
                low = m & 0xFFFFFFFF
        return m >> 32


def derive(seed, a, b):
    x, h = splitmix64(seed)
    h ^= (a * 0xD6E8FEB86659FD93) & MASK
    h, h2 = splitmix64(h)
    h = h2 ^ ((b * 0xA0761D6478BD642F) & MASK)
    return Xoshiro(h)
