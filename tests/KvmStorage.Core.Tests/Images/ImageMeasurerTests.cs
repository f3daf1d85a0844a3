using System.Globalization;
using System.Text.Json;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Convert;
using KvmStorage.Core.Images.Measure;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Images;

/// <summary>
/// <see cref="ImageMeasurer"/> against <c>qemu-img measure --output=json</c> (required, fully-allocated and bitmaps) on
/// a matrix of inputs (raw with holes and an odd size, qcow2 with zero and compressed clusters, metadata preallocation,
/// a 2-level chain, a qcow2 with dirty bitmaps, vmdk and vdi) and output options (cluster sizes, compat, refcount widths,
/// extended L2, preallocation, a backing file, LUKS encryption; raw and luks), and for new images of given sizes. For
/// vhdx, vpc and vdi, which qemu cannot measure, the figures are checked against what the module's writers make.
/// </summary>
public sealed class ImageMeasurerTests : IDisposable
{
    private const ulong MiB = 1024 * 1024;

    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    /// <summary>qemu-img -O and -o for each option set, and the same as <see cref="MeasureOptions"/>.</summary>
    private static readonly (string Format, string Options, MeasureOptions Ours)[] OptionSets =
    [
        ("qcow2", "", new MeasureOptions()),
        ("qcow2", "cluster_size=512", new MeasureOptions { ClusterSize = 512 }),
        ("qcow2", "cluster_size=4k,compat=0.10", new MeasureOptions { ClusterSize = 4096, Compat = "0.10" }),
        ("qcow2", "cluster_size=2M", new MeasureOptions { ClusterSize = 2 * (uint)MiB }),
        ("qcow2", "refcount_bits=1", new MeasureOptions { RefcountBits = 1 }),
        ("qcow2", "refcount_bits=64,cluster_size=16k", new MeasureOptions { RefcountBits = 64, ClusterSize = 16384 }),
        ("qcow2", "extended_l2=on", new MeasureOptions { ExtendedL2 = true }),
        ("qcow2", "extended_l2=on,cluster_size=16k", new MeasureOptions { ExtendedL2 = true, ClusterSize = 16384 }),
        ("qcow2", "preallocation=metadata", new MeasureOptions { Preallocation = Preallocation.Metadata }),
        ("qcow2", "preallocation=falloc", new MeasureOptions { Preallocation = Preallocation.Falloc }),
        ("qcow2", "preallocation=full,cluster_size=8k", new MeasureOptions { Preallocation = Preallocation.Full, ClusterSize = 8192 }),
        ("qcow2", "backing_file=base.qcow2", new MeasureOptions { HasBackingFile = true }),
        ("raw", "", new MeasureOptions { Format = ImageFormat.Raw }),
    ];

    /// <summary>LUKS outputs: qemu-img calibrates PBKDF2 for each (seconds), so they get a few inputs of their own.</summary>
    private static readonly (string Format, string Options, MeasureOptions Ours)[] LuksSets =
    [
        ("qcow2", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", new MeasureOptions { Encrypt = true }),
        ("qcow2", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10,encrypt.cipher-alg=aes-128,cluster_size=1M", new MeasureOptions { Encrypt = true, KeyBytes = 32, ClusterSize = (uint)MiB }),
        ("luks", "key-secret=s0,iter-time=10", new MeasureOptions { Format = ImageFormat.Raw, Encrypt = true }),
    ];

    public static TheoryData<string> Inputs() => new() { "raw", "raw-odd", "qcow2-mixed", "qcow2-metadata", "chain", "qcow2-bitmaps", "vmdk", "vdi" };

    [SkippableTheory]
    [MemberData(nameof(Inputs))]
    public void Measuring_an_image_equals_qemu_img_measure(string input)
    {
        ExternalTool.Require("qemu-img");
        ExternalTool.Require("qemu-io");
        (string path, string format) = Make(input);
        using IBlockReader reader = BlockReaders.Open(path, new BlockOpenOptions { ForceShare = true });
        foreach ((string outFormat, string options, MeasureOptions ours) in OptionSets)
        {
            JsonElement qemu = QemuMeasure(["-f", format, path], outFormat, options);
            AssertSame(qemu, ImageMeasurer.Measure(reader, null, ours), $"{input} -O {outFormat} -o {options}");
        }
    }

    [SkippableFact]
    public void Measuring_a_new_image_equals_qemu_img_measure_size()
    {
        ExternalTool.Require("qemu-img");
        foreach (ulong size in new ulong[] { 0, 1000, 1 * MiB, (100 * MiB) + 12345, 1UL << 40, 5UL << 40 })
        {
            foreach ((string outFormat, string options, MeasureOptions ours) in OptionSets)
            {
                if (size >= 1UL << 40 && options.Contains("cluster_size=512", StringComparison.Ordinal))
                {
                    continue;
                }

                JsonElement qemu = QemuMeasure(["--size", size.ToString(CultureInfo.InvariantCulture)], outFormat, options);
                AssertSame(qemu, ImageMeasurer.Measure(null, size, ours), $"--size {size} -O {outFormat} -o {options}");
            }
        }
    }

    [SkippableFact]
    public void Measuring_luks_outputs_equals_qemu_img_measure()
    {
        ExternalTool.Require("qemu-img");
        ExternalTool.Require("qemu-io");
        (string path, string format) = Make("raw-odd");
        using IBlockReader reader = BlockReaders.Open(path, new BlockOpenOptions { ForceShare = true });
        for (int i = 0; i < LuksSets.Length; i++)
        {
            (string outFormat, string options, MeasureOptions ours) = LuksSets[i];
            if (i != 1)
            {
                AssertSame(QemuMeasure(["-f", format, path], outFormat, options), ImageMeasurer.Measure(reader, null, ours), $"odd raw -O {outFormat} -o {options}");
            }

            if (i != 0)
            {
                AssertSame(QemuMeasure(["--size", "1000"], outFormat, options), ImageMeasurer.Measure(null, 1000, ours), $"--size 1000 -O {outFormat} -o {options}");
            }
        }
    }

    [SkippableFact]
    public void Options_qemu_img_measure_refuses_are_refused()
    {
        ExternalTool.Require("qemu-img");
        (string Options, MeasureOptions Ours)[] refused =
        [
            ("cluster_size=3000", new MeasureOptions { ClusterSize = 3000 }),
            ("cluster_size=4M", new MeasureOptions { ClusterSize = 4 * (uint)MiB }),
            ("extended_l2=on,cluster_size=8k", new MeasureOptions { ExtendedL2 = true, ClusterSize = 8192 }),
            ("compat=0.10,refcount_bits=8", new MeasureOptions { Compat = "0.10", RefcountBits = 8 }),
            ("refcount_bits=3", new MeasureOptions { RefcountBits = 3 }),
            ("refcount_bits=128", new MeasureOptions { RefcountBits = 128 }),
            ("compat=2.0", new MeasureOptions { Compat = "2.0" }),
        ];
        foreach ((string options, MeasureOptions ours) in refused)
        {
            Assert.NotEqual(0, ExternalTool.Run("qemu-img", "measure", "--size", "1G", "-O", "qcow2", "-o", options).ExitCode);
            var e = Assert.Throws<KvmStorageException>(() => ImageMeasurer.Measure(null, 1UL << 30, ours));
            Assert.Equal(MeasureErrorIds.InvalidMeasureOptions, e.ErrorId);
        }

        // Too large for 512-byte clusters (an L1 table over 32 MiB), as qemu says.
        Assert.NotEqual(0, ExternalTool.Run("qemu-img", "measure", "--size", "100T", "-O", "qcow2", "-o", "cluster_size=512").ExitCode);
        Assert.Equal(MeasureErrorIds.InvalidMeasureOptions, Assert.Throws<KvmStorageException>(() => ImageMeasurer.Measure(null, 100UL << 40, new MeasureOptions { ClusterSize = 512 })).ErrorId);
        Assert.NotEqual(0, ExternalTool.Run("qemu-img", "measure", "--size", "1G", "-O", "vmdk").ExitCode);
        Assert.Equal(MeasureErrorIds.MeasureNotSupported, Assert.Throws<KvmStorageException>(() => ImageMeasurer.Measure(null, 1UL << 30, new MeasureOptions { Format = ImageFormat.Vmdk })).ErrorId);
        Assert.Equal(MeasureErrorIds.InvalidMeasureOptions, Assert.Throws<KvmStorageException>(() => ImageMeasurer.Measure(null, 1UL << 30, new MeasureOptions { Format = ImageFormat.Vdi, ForceSize = true })).ErrorId);
        Assert.Equal(MeasureErrorIds.InvalidMeasureOptions, Assert.Throws<KvmStorageException>(() => ImageMeasurer.Measure(null, null, new MeasureOptions())).ErrorId);
    }

    /// <summary>qemu cannot measure vhdx, vpc or vdi; the module's figures are the files its own writers make.</summary>
    [Theory]
    [InlineData("vhdx")]
    [InlineData("vhdx-fixed")]
    [InlineData("vpc")]
    [InlineData("vpc-fixed")]
    [InlineData("vpc-azure")]
    [InlineData("vdi")]
    [InlineData("vdi-static")]
    public void Block_formats_measure_what_the_writers_make(string variant)
    {
        (ImageFormat format, bool isFixed, bool forceSize, uint? blockSize) = Convert.ForeignWriterTests.Variant(variant);
        string source = temp.Combine("random.raw");
        var random = new Random(7);
        using (FileStream s = File.Create(source))
        {
            s.SetLength((long)(40 * MiB) + 4096);
            byte[] data = new byte[3 * MiB];
            random.NextBytes(data);
            s.Write(data);
            s.Position = (long)(20 * MiB);
            s.Write(data, 0, 100_000);
        }

        var options = new MeasureOptions { Format = format, Fixed = isFixed, ForceSize = forceSize, ClusterSize = blockSize };
        ImageMeasurement measured;
        using (IBlockReader reader = BlockReaders.Open(source))
        {
            measured = ImageMeasurer.Measure(reader, null, options);
        }

        Assert.False(measured.QemuCompatible);
        string output = temp.Combine("out." + format.ToQemuName());
        using (IBlockReader reader = BlockReaders.Open(source))
        {
            ImageInfo info = ImageConverter.Convert(reader, output, new ConvertOptions { Format = format, Fixed = isFixed, ForceSize = forceSize, ClusterSize = blockSize });
            Assert.Equal(info.VirtualSize, measured.VirtualSize);
        }

        // Every block with data holds random bytes: the writer allocates exactly the blocks measured.
        Assert.Equal(measured.RequiredBytes, (ulong)new FileInfo(output).Length);
        string empty = temp.Combine("empty." + format.ToQemuName());
        ImageCreator.Create(empty, new ImageCreateOptions { Format = format, VirtualSize = (40 * MiB) + 4096, Fixed = isFixed, ForceSize = forceSize, ClusterSize = blockSize });
        ImageMeasurement none = ImageMeasurer.Measure(null, (40 * MiB) + 4096, options);
        Assert.Equal(none.RequiredBytes, (ulong)new FileInfo(empty).Length);
        Assert.True(measured.FullyAllocatedBytes >= measured.RequiredBytes);
        Assert.Equal(isFixed, measured.FullyAllocatedBytes == measured.RequiredBytes);
    }

    private static void AssertSame(JsonElement qemu, ImageMeasurement ours, string what)
    {
        Assert.True(qemu.GetProperty("required").GetUInt64() == ours.RequiredBytes, $"{what}: required {qemu.GetProperty("required").GetUInt64()} (qemu) against {ours.RequiredBytes}");
        Assert.True(qemu.GetProperty("fully-allocated").GetUInt64() == ours.FullyAllocatedBytes, $"{what}: fully allocated {qemu.GetProperty("fully-allocated").GetUInt64()} (qemu) against {ours.FullyAllocatedBytes}");
        ulong? bitmaps = qemu.TryGetProperty("bitmaps", out JsonElement b) ? b.GetUInt64() : null;
        Assert.True(bitmaps == ours.BitmapsBytes, $"{what}: bitmaps {bitmaps} (qemu) against {ours.BitmapsBytes}");
        Assert.True(ours.QemuCompatible);
    }

    private static JsonElement QemuMeasure(string[] input, string format, string options)
    {
        string[] o = options.Length == 0 ? [] : ["-o", options];
        string json = ExternalTool.RunChecked("qemu-img", ["measure", "--output=json", "--object", "secret,id=s0,data=x", .. input, "-O", format, .. o]);
        using JsonDocument doc = JsonDocument.Parse(json);
        return doc.RootElement.Clone();
    }

    private (string Path, string Format) Make(string name)
    {
        string Q(string file) => temp.Combine(file);
        void Io(string format, string file, params string[] commands) =>
            ExternalTool.RunChecked("qemu-io", ["-f", format, .. commands.SelectMany(c => new[] { "-c", c }), file]);
        void Create(string format, string file, string size, params string[] options) =>
            ExternalTool.RunChecked("qemu-img", ["create", "-q", "-f", format, .. options, file, size]);
        switch (name)
        {
            case "raw":
                Create("raw", Q("a.raw"), "64M");
                Io("raw", Q("a.raw"), "write -P 1 0 3M", "write -z 8M 1M", "write -P 2 9M 4k", "write -P 3 33M 100k", "write -P 4 63M 1M");
                return (Q("a.raw"), "raw");
            case "raw-odd":
                using (FileStream s = File.Create(Q("odd.raw")))
                {
                    s.Write(new byte[70_000].Select((_, i) => (byte)(i | 1)).ToArray());
                    s.SetLength(6_000_000);
                }

                return (Q("odd.raw"), "raw");
            case "qcow2-mixed":
                Create("qcow2", Q("m.qcow2"), "16M");
                Io("qcow2", Q("m.qcow2"), "write -P 1 0 128k", "write -z 256k 128k", "write -P 2 1M 64k", "write -c -P 3 2M 128k", "write -P 4 4M 4k", "write -P 5 15M 1M");
                return (Q("m.qcow2"), "qcow2");
            case "qcow2-metadata":
                Create("qcow2", Q("pm.qcow2"), "8M", "-o", "preallocation=metadata");
                Io("qcow2", Q("pm.qcow2"), "write -P 1 0 64k", "write -P 2 5M 4k");
                return (Q("pm.qcow2"), "qcow2");
            case "chain":
                Create("qcow2", Q("base.qcow2"), "16M");
                Io("qcow2", Q("base.qcow2"), "write -P 1 0 1M", "write -z 2M 1M", "write -P 2 8M 64k");
                Create("qcow2", Q("top.qcow2"), "20M", "-b", "base.qcow2", "-F", "qcow2");
                Io("qcow2", Q("top.qcow2"), "write -P 3 512k 1M", "write -z 8M 64k", "write -P 4 18M 4k");
                return (Q("top.qcow2"), "qcow2");
            case "qcow2-bitmaps":
                Create("qcow2", Q("bm.qcow2"), "100M");
                Io("qcow2", Q("bm.qcow2"), "write -P 1 0 1M");
                ExternalTool.RunChecked("qemu-img", "bitmap", "--add", "-g", "64k", Q("bm.qcow2"), "backup-0");
                ExternalTool.RunChecked("qemu-img", "bitmap", "--add", "-g", "1M", Q("bm.qcow2"), "a-much-longer-bitmap-name");
                return (Q("bm.qcow2"), "qcow2");
            case "vmdk":
                Create("raw", Q("s.raw"), "24M");
                Io("raw", Q("s.raw"), "write -P 1 0 3M", "write -P 2 10M 100k");
                ExternalTool.RunChecked("qemu-img", "convert", "-f", "raw", "-O", "vmdk", Q("s.raw"), Q("s.vmdk"));
                return (Q("s.vmdk"), "vmdk");
            case "vdi":
                Create("raw", Q("s.raw"), "24M");
                Io("raw", Q("s.raw"), "write -P 1 0 3M", "write -P 2 10M 100k");
                ExternalTool.RunChecked("qemu-img", "convert", "-f", "raw", "-O", "vdi", Q("s.raw"), Q("s.vdi"));
                return (Q("s.vdi"), "vdi");
            default:
                throw new ArgumentOutOfRangeException(nameof(name));
        }
    }
}
