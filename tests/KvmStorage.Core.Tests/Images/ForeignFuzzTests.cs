using System.Buffers.Binary;
using System.Diagnostics;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Tests.Support;
using Microsoft.Win32.SafeHandles;
using Xunit;

namespace KvmStorage.Core.Tests.Images;

/// <summary>
/// Valid images mutated with a seeded Random (random bytes, huge counts and offsets, truncations): the
/// reader either returns or throws KvmStorageException, never anything else, and never takes long.
/// </summary>
public sealed class ForeignFuzzTests : IClassFixture<ForeignTestImages>
{
    private const int Iterations = 1500;
    private const int MaxSeedLength = 4 * 1024 * 1024;
    private readonly ForeignTestImages images;

    public ForeignFuzzTests(ForeignTestImages images)
    {
        this.images = images;
    }

    [SkippableTheory]
    [InlineData("empty.vmdk", ImageFormat.Vmdk)]
    [InlineData("stream.vmdk", ImageFormat.Vmdk)]
    [InlineData("footer.vmdk", ImageFormat.Vmdk)]
    [InlineData("flat.vmdk", ImageFormat.Vmdk)]
    [InlineData("split.vmdk", ImageFormat.Vmdk)]
    [InlineData("empty.vdi", ImageFormat.Vdi)]
    [InlineData("empty.vhd", ImageFormat.Vpc)]
    [InlineData("fixed.vhd", ImageFormat.Vpc)]
    [InlineData("empty.vhdx", ImageFormat.Vhdx)]
    [InlineData("child.qcow", ImageFormat.Qcow)]
    [InlineData("child.qed", ImageFormat.Qed)]
    [InlineData("image.luks", ImageFormat.Luks)]
    [InlineData("image.parallels", ImageFormat.Parallels)]
    public void Mutated_headers_only_ever_raise_KvmStorageException(string seedName, ImageFormat format)
    {
        ExternalTool.Require("qemu-img");
        // Work next to the seed so that descriptor extents still resolve.
        string path = images.PathOf("fuzz-" + seedName);
        byte[] original = File.ReadAllBytes(images.PathOf(seedName));
        if (original.Length > MaxSeedLength && !seedName.EndsWith(".vhd", StringComparison.Ordinal)) // a VHD keeps its trailing footer
        {
            original = original[..MaxSeedLength];
        }

        File.WriteAllBytes(path, original);
        IImageFormatReader reader = ForeignTestImages.Readers.Single(r => r.Format == format);
        ImageProbe seedProbe = ForeignTestImages.ProbeOf(path);
        Assert.True(reader.Probe(seedProbe));
        using (SafeFileHandle h = File.OpenHandle(path))
        {
            reader.ReadInfo(h, seedProbe, 0);
        }

        int[] hot = HotOffsets(original);
        var random = new Random(seedName.Length * 7919);
        var total = Stopwatch.StartNew();
        int accepted = 0;
        int rejected = 0;
        using SafeFileHandle handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
        for (int i = 0; i < Iterations; i++)
        {
            var touched = new List<(int Offset, int Length)>();
            int? cut = null;
            int mutations = random.Next(1, 5);
            for (int m = 0; m < mutations; m++)
            {
                int offset = Pick(random, hot, original.Length);
                byte[] bytes = random.Next(3) switch
                {
                    0 => [(byte)random.Next(256)],
                    1 => Huge(random, 4),
                    _ => Huge(random, 8),
                };
                int n = Math.Min(bytes.Length, original.Length - offset);
                if (n <= 0)
                {
                    continue;
                }

                RandomAccess.Write(handle, bytes.AsSpan(0, n), offset);
                touched.Add((offset, n));
            }

            if (random.Next(20) == 0)
            {
                cut = random.Next(2) == 0 ? random.Next(Math.Min(original.Length, 70 * 1024)) : random.Next(original.Length);
                RandomAccess.SetLength(handle, cut.Value);
            }

            var one = Stopwatch.StartNew();
            try
            {
                ImageProbe probe = ForeignTestImages.ProbeOf(path);
                foreach (IImageFormatReader r in ForeignTestImages.Readers)
                {
                    r.Probe(probe);
                }

                if (reader.Probe(probe))
                {
                    using SafeFileHandle readHandle = File.OpenHandle(path);
                    ImageInfo info = reader.ReadInfo(readHandle, probe, 0);
                    Assert.Equal(format, info.ImageFormat);
                    accepted++;
                }
            }
            catch (KvmStorageException e)
            {
                Assert.False(string.IsNullOrEmpty(e.ErrorId));
                rejected++;
            }

            Assert.True(one.Elapsed < TimeSpan.FromSeconds(2), $"iteration {i} took {one.Elapsed}");

            // Restore the seed in place: cheaper than rewriting megabytes per iteration.
            if (cut is int c)
            {
                RandomAccess.SetLength(handle, original.Length);
                RandomAccess.Write(handle, original.AsSpan(c), c);
            }

            foreach ((int offset, int length) in touched)
            {
                RandomAccess.Write(handle, original.AsSpan(offset, length), offset);
            }
        }

        Assert.True(rejected > 0, "no mutation was rejected: the fuzzing does not reach the parser");
        Assert.True(accepted + rejected > 0);
        Assert.True(total.Elapsed < TimeSpan.FromSeconds(30), $"fuzzing {seedName} took {total.Elapsed}");
        File.Delete(path);
    }

    private static int Pick(Random random, int[] hot, int length)
    {
        int roll = random.Next(10);
        if (roll < 7)
        {
            // Near a structure start: header fields live in the first few hundred bytes of each.
            int start = hot[random.Next(hot.Length)];
            return Math.Min(length - 1, start + random.Next(512));
        }

        return roll < 9 ? random.Next(Math.Min(length, 4096)) : random.Next(length);
    }

    private static byte[] Huge(Random random, int width)
    {
        byte[] b = new byte[width];
        switch (random.Next(4))
        {
            case 0:
                b.AsSpan().Fill(0xFF);
                break;
            case 1:
                b.AsSpan().Fill(0x7F);
                break;
            case 2:
                b[^1] = 0x80;
                break;
            default:
                random.NextBytes(b);
                break;
        }

        return b;
    }

    /// <summary>Offsets of the structures a reader visits: file start and end, VHDX headers and regions, VHD dynamic header.</summary>
    private static int[] HotOffsets(byte[] data)
    {
        var hot = new List<int> { 0, 0x40, 0x150, Math.Max(0, data.Length - 512), Math.Max(0, data.Length - 1536), 512 };
        foreach (int o in new[] { 64 * 1024, 128 * 1024, 192 * 1024, 256 * 1024 })
        {
            if (o < data.Length)
            {
                hot.Add(o);
            }
        }

        for (int o = 1024 * 1024; o < data.Length; o += 1024 * 1024)
        {
            if (data.AsSpan(o).StartsWith("metadata"u8))
            {
                hot.Add(o);
                hot.Add(o + (64 * 1024));
            }
        }

        if (data.Length >= 24 && data.AsSpan().StartsWith("conectix"u8))
        {
            hot.Add((int)Math.Min((ulong)data.Length - 1, BinaryPrimitives.ReadUInt64BigEndian(data.AsSpan(16))));
        }

        return [.. hot];
    }
}
