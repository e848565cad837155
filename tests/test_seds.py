import numpy as np
import pytest

from bmodesep.core import seds


@pytest.mark.parametrize("nu0", [23.0, 30.0, 100.0, 353.0])
def test_every_sed_is_one_at_its_reference_frequency(nu0):
    assert seds.cmb_sed(nu0) == 1.0
    assert seds.synchrotron_sed(nu0, -3.1, nu0) == pytest.approx(1.0, abs=1e-14)
    assert seds.dust_sed(nu0, 1.6, 19.0, nu0) == pytest.approx(1.0, abs=1e-14)


def test_rj_to_cmb_factor_by_hand():
    # x = h nu / (k T_CMB) at 100 GHz: 6.62607015e-25 / (1.380649e-23 * 2.7255)
    x = 6.62607015e-34 * 100e9 / (1.380649e-23 * 2.7255)
    by_hand = (np.exp(x) - 1) ** 2 / (x**2 * np.exp(x))
    assert seds.rj_to_cmb(100.0) == pytest.approx(by_hand, rel=1e-13)
    assert 1.25 < seds.rj_to_cmb(100.0) < 1.29  # the well-known ~1.27 at 100 GHz
    assert seds.rj_to_cmb(1e-3) == pytest.approx(1.0, abs=1e-6)  # RJ limit


def test_dust_sed_by_hand_at_100_ghz():
    beta, temp, nu, nu0 = 1.54, 20.0, 100.0, 353.0
    h_k = 6.62607015e-34 * 1e9 / 1.380649e-23
    rj = (nu / nu0) ** (beta + 1) * np.expm1(h_k * nu0 / temp) / np.expm1(h_k * nu / temp)
    g = seds.rj_to_cmb
    assert seds.dust_sed(nu, beta, temp, nu0) == pytest.approx(rj * g(nu) / g(nu0), rel=1e-13)
    # by hand: (100/353)^2.54 = 0.04062; (e^0.8471 - 1)/(e^0.2400 - 1) = 4.915
    assert rj == pytest.approx(0.04062 * 4.915, rel=2e-3)


def test_synchrotron_sed_by_hand():
    g = seds.rj_to_cmb
    value = seds.synchrotron_sed(46.0, -3.0, 23.0)
    assert value == pytest.approx(2.0**-3 * g(46.0) / g(23.0), rel=1e-14)


def test_dust_rayleigh_jeans_limit_is_power_law():
    # for h nu << k T the modified blackbody in K_RJ is (nu/nu0)^beta
    nu, nu0 = 1.0, 2.0
    rj = seds.dust_sed(nu, 1.5, 1e4, nu0) * seds.rj_to_cmb(nu0) / seds.rj_to_cmb(nu)
    assert rj == pytest.approx(0.5**1.5, rel=1e-4)


def test_seds_broadcast_frequency_against_pixels():
    nu = np.array([40.0, 100.0, 353.0])[:, None]
    beta = np.array([1.4, 1.5, 1.6, 1.7])[None]
    out = seds.dust_sed(nu, beta, 20.0)
    assert out.shape == (3, 4)
    assert np.allclose(out[2], 1.0)
