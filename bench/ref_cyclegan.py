"""The reference CycleGAN training step, re-implemented for the benchmark only (not part of the library).

Follows junyanz/pytorch-CycleGAN-and-pix2pix (models/networks.py, models/cycle_gan_model.py, util/image_pool.py) with
its CycleGAN defaults except where the benchmark says otherwise:
- generator `UnetGenerator(3, 3, num_downs, ngf=32, norm_layer=InstanceNorm2d(affine=False), use_dropout=False)`, built
  exactly as the reference builds it: an innermost block ngf*8 -> ngf*8, `num_downs - 5` middle blocks (none for
  num_downs <= 5), then ngf*4, ngf*2, ngf and the outermost block. So `num_downs=4` (the issue's "4 downs") builds the
  same network as `num_downs=5`: 5 stride-2 downsamplings, 4x4 kernels, transposed-conv upsampling, conv bias on
  (instance norm without affine), 4.15 M parameters per generator at ngf 32;
- PatchGAN `NLayerDiscriminator(3, ndf=64, n_layers=3)` with the same instance norm (2.77 M parameters);
- LSGAN (MSE against 1/0), cycle λ = 10 for both directions, identity 0, image pool 50 (the reference's own pool:
  once full, with probability 1/2 return a stored image and store the new one), Adam lr 2e-4, betas (0.5, 0.999);
- `optimize_parameters` order: forward both cycles, generator step with the discriminators frozen, then D_A and D_B
  (each 0.5 * (loss real + loss fake on a pooled fake), backward per discriminator) and one optimizer step for both.
Weight init is the reference's `init_weights('normal', 0.02)`."""
import functools, random
import torch, torch.nn as nn

Norm = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)


class UnetSkipConnectionBlock(nn.Module):
    "networks.UnetSkipConnectionBlock: X -> |downsampling -- submodule -- upsampling| -> X concatenated with the input."
    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False, innermost=False, use_dropout=False):
        super().__init__()
        self.outermost, use_bias = outermost, True    # the reference: use_bias = norm_layer.func == nn.InstanceNorm2d
        input_nc = input_nc or outer_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        downrelu, downnorm, uprelu, upnorm = nn.LeakyReLU(0.2, True), Norm(inner_nc), nn.ReLU(True), Norm(outer_nc)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm] + ([nn.Dropout(0.5)] if use_dropout else [])
        self.model = nn.Sequential(*model)

    def forward(self, x): return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    "networks.UnetGenerator, built from the innermost block outwards."
    def __init__(self, input_nc=3, output_nc=3, num_downs=4, ngf=32, use_dropout=False):
        super().__init__()
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True)
        for _ in range(num_downs - 5): block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, use_dropout=use_dropout)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True)

    def forward(self, x): return self.model(x)


class NLayerDiscriminator(nn.Module):
    "networks.NLayerDiscriminator (PatchGAN, 70x70 receptive field at n_layers=3)."
    def __init__(self, input_nc=3, ndf=64, n_layers=3):
        super().__init__()
        seq = [nn.Conv2d(input_nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=True), Norm(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=True), Norm(ndf * mult), nn.LeakyReLU(0.2, True),
                nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.model = nn.Sequential(*seq)

    def forward(self, x): return self.model(x)


def init_weights(net, gain=0.02):
    "networks.init_weights(init_type='normal'): conv weights N(0, 0.02), biases 0."
    def f(m):
        if hasattr(m, 'weight') and 'Conv' in m.__class__.__name__:
            nn.init.normal_(m.weight, 0., gain)
            if m.bias is not None: nn.init.constant_(m.bias, 0.)
    return net.apply(f)


class ImagePool:
    "util.image_pool.ImagePool."
    def __init__(self, pool_size=50): self.pool_size, self.num_imgs, self.images = pool_size, 0, []
    def query(self, images):
        if self.pool_size == 0: return images
        out = []
        for image in images:
            image = torch.unsqueeze(image.data, 0)
            if self.num_imgs < self.pool_size:
                self.num_imgs += 1; self.images.append(image); out.append(image)
            elif random.uniform(0, 1) > 0.5:
                i = random.randint(0, self.pool_size - 1)
                tmp = self.images[i].clone(); self.images[i] = image; out.append(tmp)
            else: out.append(image)
        return torch.cat(out, 0)


def reference_networks(ngf=32, num_downs=4, ndf=64):
    "G_A, G_B, D_A, D_B as the reference builds them (initialized)."
    return ([init_weights(UnetGenerator(3, 3, num_downs, ngf)) for _ in range(2)] +
            [init_weights(NLayerDiscriminator(3, ndf, 3)) for _ in range(2)])


class ReferenceCycleGAN:
    "cycle_gan_model.CycleGANModel's training step (lambda_A = lambda_B = 10, lambda_identity = 0, lsgan, pool 50)."
    def __init__(self, nets=None, lr=2e-4, pool_size=50, lambda_cycle=10.):
        self.netG_A, self.netG_B, self.netD_A, self.netD_B = nets or reference_networks()
        self.lambda_cycle = lambda_cycle
        self.criterionGAN, self.criterionCycle = nn.MSELoss(), nn.L1Loss()   # GANLoss('lsgan') = MSE against a filled target
        self.optimizer_G = torch.optim.Adam(list(self.netG_A.parameters()) + list(self.netG_B.parameters()), lr=lr, betas=(0.5, 0.999))
        self.optimizer_D = torch.optim.Adam(list(self.netD_A.parameters()) + list(self.netD_B.parameters()), lr=lr, betas=(0.5, 0.999))
        self.fake_A_pool, self.fake_B_pool = ImagePool(pool_size), ImagePool(pool_size)

    def gan(self, pred, real):
        return self.criterionGAN(pred, torch.tensor(1. if real else 0.).expand_as(pred))

    @staticmethod
    def set_requires_grad(nets, flag):
        for net in nets:
            for p in net.parameters(): p.requires_grad = flag

    def forward(self):
        self.fake_B = self.netG_A(self.real_A); self.rec_A = self.netG_B(self.fake_B)
        self.fake_A = self.netG_B(self.real_B); self.rec_B = self.netG_A(self.fake_A)

    def backward_D_basic(self, netD, real, fake):
        loss_D = (self.gan(netD(real), True) + self.gan(netD(fake.detach()), False)) * 0.5
        loss_D.backward()
        return loss_D

    def backward_G(self):
        self.loss_G_A = self.gan(self.netD_A(self.fake_B), True)
        self.loss_G_B = self.gan(self.netD_B(self.fake_A), True)
        self.loss_cycle_A = self.criterionCycle(self.rec_A, self.real_A) * self.lambda_cycle
        self.loss_cycle_B = self.criterionCycle(self.rec_B, self.real_B) * self.lambda_cycle
        self.loss_G = self.loss_G_A + self.loss_G_B + self.loss_cycle_A + self.loss_cycle_B
        self.loss_G.backward()

    def optimize_parameters(self, real_A, real_B):
        "One training step on a (real_A, real_B) pair of float batches in [-1, 1]."
        self.real_A, self.real_B = real_A, real_B
        self.forward()
        self.set_requires_grad([self.netD_A, self.netD_B], False)
        self.optimizer_G.zero_grad(); self.backward_G(); self.optimizer_G.step()
        self.set_requires_grad([self.netD_A, self.netD_B], True)
        self.optimizer_D.zero_grad()
        self.loss_D_A = self.backward_D_basic(self.netD_A, self.real_B, self.fake_B_pool.query(self.fake_B))
        self.loss_D_B = self.backward_D_basic(self.netD_B, self.real_A, self.fake_A_pool.query(self.fake_A))
        self.optimizer_D.step()
