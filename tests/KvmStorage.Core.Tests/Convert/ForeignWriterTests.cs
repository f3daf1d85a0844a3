using System.Buffers.Binary;
using System.Globalization;
using System.Text.Json;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Convert;
using KvmStorage.Core.IO;
using KvmStorage.Core.Tests.Images;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Convert;

/// <summary>
/// The vhdx, vpc and vdi writers, with qemu-img as the oracle: every image they make (created empty or converted) is
/// read by qemu-img as the format, the same size, identical to its source (<c>qemu-img compare</c>), and passes
/// <c>qemu-img check</c> where qemu checks the format (vhdx, vdi; qemu has no check for vpc, so the module's own does).
/// </summary>
public sealed class ForeignWriterTests : IDisposable
{
    private const ulong MiB = 1024 * 1024;

    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    /// <summary>Name, format, options: each writer in each variant.</summary>
    public static TheoryData<string> Variants() => new()
    {
        "vhdx", "vhdx-fixed", "vhdx-1M", "vpc", "vpc-fixed", "vpc-azure", "vpc-dynamic-forced", "vdi", "vdi-static",
    };

    internal static (ImageFormat Format, bool Fixed, bool ForceSize, uint? BlockSize) Variant(string name) => name switch
    {
        "vhdx" => (ImageFormat.Vhdx, false, false, null),
        "vhdx-fixed" => (ImageFormat.Vhdx, true, false, null),
        "vhdx-1M" => (ImageFormat.Vhdx, false, false, (uint)MiB),
        "vpc" => (ImageFormat.Vpc, false, false, null),
        "vpc-fixed" => (ImageFormat.Vpc, true, false, null),
        "vpc-azure" => (ImageFormat.Vpc, true, true, null),
        "vpc-dynamic-forced" => (ImageFormat.Vpc, false, true, null),
        "vdi" => (ImageFormat.Vdi, false, false, null),
        "vdi-static" => (ImageFormat.Vdi, true, false, null),
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    [SkippableTheory]
    [MemberData(nameof(Variants))]
    public void Converted_image_is_identical_to_its_source_for_qemu(string variant)
    {
        ExternalTool.Require("qemu-img");
        (ImageFormat format, bool isFixed, bool forceSize, uint? blockSize) = Variant(variant);
        string source = ImageConverterTests.MakeSampleRaw(temp.Combine("source.raw"));
        string output = temp.Combine("out." + format.ToQemuName());
        var options = new ConvertOptions { Format = format, Fixed = isFixed, ForceSize = forceSize, ClusterSize = blockSize };
        ImageInfo info;
        using (var reader = new RawFileBlockReader(source))
        {
            info = ImageConverter.Convert(reader, output, options);
        }

        string q = format.ToQemuName();
        JsonElement qemu = QemuInfo(output, q);
        Assert.Equal(q, qemu.GetProperty("format").GetString());
        Assert.Equal(qemu.GetProperty("virtual-size").GetUInt64(), info.VirtualSize);
        ulong sourceSize = (ulong)new FileInfo(source).Length;
        Assert.InRange(info.VirtualSize, sourceSize, sourceSize + (format == ImageFormat.Vpc ? 8 * MiB : 0));
        if (forceSize)
        {
            Assert.Equal(0UL, info.VirtualSize % MiB);
        }

        AssertChecked(output, q);
        ExternalTool.Result compare = ExternalTool.Run("qemu-img", "compare", "-f", "raw", "-F", q, source, output);
        Assert.True(compare.ExitCode == 0, $"qemu-img compare exited {compare.ExitCode}: {compare.Stdout}{compare.Stderr}");

        // The module reads its own output back identical too, and the file is sparse: holes where the source reads zeros.
        using (IBlockReader ours = BlockReaders.Open(output))
        {
            Assert.Equal(info.VirtualSize, ours.Size);
            Assert.True(SameContent(source, ours), "the module reads the output differently from its source");
        }

        ulong allocated = FileStatus.Get(output).AllocatedBytes;
        Assert.True(allocated < 16 * MiB, $"{allocated} bytes allocated for 7 MiB of data: zeros were written");
        Assert.Empty(Directory.GetFiles(temp.Path, AtomicFile.TempPrefix + "*"));
    }

    [SkippableTheory]
    [MemberData(nameof(Variants))]
    public void Created_image_reads_as_zeros_for_qemu_and_takes_its_writes(string variant)
    {
        ExternalTool.Require("qemu-img");
        ExternalTool.Require("qemu-io");
        (ImageFormat format, bool isFixed, bool forceSize, uint? blockSize) = Variant(variant);
        string q = format.ToQemuName();
        const ulong Requested = (100 * MiB) + 1000;
        string path = temp.Combine("new." + q);
        ImageInfo info = ImageCreator.Create(path, new ImageCreateOptions { Format = format, VirtualSize = Requested, Fixed = isFixed, ForceSize = forceSize, ClusterSize = blockSize });
        JsonElement qemu = QemuInfo(path, q);
        Assert.Equal(qemu.GetProperty("virtual-size").GetUInt64(), info.VirtualSize);
        Assert.True(info.VirtualSize >= Requested, $"{info.VirtualSize} is smaller than the {Requested} bytes asked for");
        AssertChecked(path, q);

        // qemu writes into it (allocating blocks in a dynamic image) and reads back what it wrote; the image stays valid.
        string io = ExternalTool.RunChecked("qemu-io", "-f", q, "-c", "write -P 0x5a 3M 1M", "-c", "read -P 0x5a 3M 1M", "-c", "read -P 0 0 3M", path);
        Assert.DoesNotContain("fail", io, StringComparison.OrdinalIgnoreCase);
        AssertChecked(path, q);
        using IBlockReader reader = BlockReaders.Open(path);
        byte[] block = new byte[MiB];
        reader.Read(3 * MiB, block);
        Assert.All(block, b => Assert.Equal(0x5a, b));
    }

    [SkippableFact]
    public void Vpc_sizes_follow_the_chs_rounding_of_qemu_img_create()
    {
        ExternalTool.Require("qemu-img");
        foreach (ulong size in new ulong[] { 1 * MiB, 100 * MiB, (1000 * MiB) + 12345, 127UL * 1024 * MiB, 200UL * 1024 * MiB })
        {
            string ours = temp.Combine($"ours-{size}.vhd");
            string theirs = temp.Combine($"theirs-{size}.vhd");
            ImageInfo info = ImageCreator.Create(ours, new ImageCreateOptions { Format = ImageFormat.Vpc, VirtualSize = size });
            ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "vpc", theirs, size.ToString(CultureInfo.InvariantCulture));
            Assert.Equal(QemuInfo(theirs, "vpc").GetProperty("virtual-size").GetUInt64(), info.VirtualSize);
            Assert.Equal(QemuInfo(theirs, "vpc").GetProperty("virtual-size").GetUInt64(), QemuInfo(ours, "vpc").GetProperty("virtual-size").GetUInt64());

            // The same geometry in the footer (cylinders, heads, sectors per track).
            Assert.Equal(Geometry(theirs), Geometry(ours));
        }
    }

    [SkippableFact]
    public void Vhdx_block_size_defaults_as_qemu_img_create()
    {
        ExternalTool.Require("qemu-img");
        foreach (ulong size in new ulong[] { 1024 * MiB, 1025 * MiB, 101UL * 1024 * MiB })
        {
            string ours = temp.Combine($"ours-{size}.vhdx");
            string theirs = temp.Combine($"theirs-{size}.vhdx");
            ImageInfo info = ImageCreator.Create(ours, new ImageCreateOptions { Format = ImageFormat.Vhdx, VirtualSize = size });
            ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "vhdx", theirs, size.ToString(CultureInfo.InvariantCulture));
            Assert.Equal(QemuInfo(theirs, "vhdx").GetProperty("cluster-size").GetUInt32(), info.ClusterSize);
            Assert.Equal(QemuInfo(theirs, "vhdx").GetProperty("cluster-size").GetUInt32(), QemuInfo(ours, "vhdx").GetProperty("cluster-size").GetUInt32());
        }
    }

    [Fact]
    public void Bad_options_are_refused_with_typed_errors_and_write_nothing()
    {
        string source = temp.Combine("source.raw");
        using (FileStream s = File.Create(source))
        {
            s.SetLength((long)(4 * MiB));
        }

        using var reader = new RawFileBlockReader(source);
        (ConvertOptions Options, string ErrorId)[] cases =
        [
            (new ConvertOptions { Format = ImageFormat.Vhdx, ClusterSize = 512 * 1024 }, ConvertErrorIds.InvalidConvertOptions),
            (new ConvertOptions { Format = ImageFormat.Vhdx, ClusterSize = 3 * (uint)MiB }, ConvertErrorIds.InvalidConvertOptions),
            (new ConvertOptions { Format = ImageFormat.Vpc, ClusterSize = (uint)MiB }, ConvertErrorIds.InvalidConvertOptions),
            (new ConvertOptions { Format = ImageFormat.Vdi, ClusterSize = 2 * (uint)MiB }, ConvertErrorIds.InvalidConvertOptions),
            (new ConvertOptions { Format = ImageFormat.Vdi, ForceSize = true }, ConvertErrorIds.InvalidConvertOptions),
            (new ConvertOptions { Format = ImageFormat.Qcow2, Fixed = true }, ConvertErrorIds.InvalidConvertOptions),
            (new ConvertOptions { Format = ImageFormat.Vhdx, Compress = true }, ConvertErrorIds.InvalidConvertOptions),
            (new ConvertOptions { Format = ImageFormat.Vpc, Preallocation = Preallocation.Full }, ConvertErrorIds.InvalidConvertOptions),
            (new ConvertOptions { Format = ImageFormat.Vdi, BackingFile = "base.qcow2" }, ConvertErrorIds.InvalidConvertOptions),
        ];
        foreach ((ConvertOptions options, string errorId) in cases)
        {
            string path = temp.Combine("out." + options.Format.ToQemuName());
            var e = Assert.Throws<KvmStorageException>(() => ImageConverter.Convert(reader, path, options));
            Assert.Equal(errorId, e.ErrorId);
        }

        (ImageCreateOptions Options, string ErrorId)[] creates =
        [
            (new ImageCreateOptions { Format = ImageFormat.Vpc, VirtualSize = 2041UL * 1024 * 1024 * 1024 }, ErrorIds.InvalidSize),
            (new ImageCreateOptions { Format = ImageFormat.Vhdx, VirtualSize = (64UL << 40) + 512 }, ErrorIds.InvalidSize),
            (new ImageCreateOptions { Format = ImageFormat.Vhdx, VirtualSize = MiB, ClusterSize = 1000 }, ImageErrorIds.InvalidCreateOptions),
            (new ImageCreateOptions { Format = ImageFormat.Vdi, VirtualSize = MiB, Preallocation = Preallocation.Falloc }, ImageErrorIds.InvalidCreateOptions),
            (new ImageCreateOptions { Format = ImageFormat.Qcow2, VirtualSize = MiB, Fixed = true }, ImageErrorIds.InvalidCreateOptions),
            (new ImageCreateOptions { Format = ImageFormat.Vhdx, VirtualSize = MiB, ForceSize = true }, ImageErrorIds.InvalidCreateOptions),
        ];
        foreach ((ImageCreateOptions options, string errorId) in creates)
        {
            var e = Assert.Throws<KvmStorageException>(() => ImageCreator.Create(temp.Combine("new." + options.Format.ToQemuName()), options));
            Assert.Equal(errorId, e.ErrorId);
        }

        Assert.Equal(["source.raw"], Directory.GetFiles(temp.Path).Select(Path.GetFileName));
    }

    private static void AssertChecked(string path, string format)
    {
        if (format == "vpc")
        {
            // qemu-img has no check for vpc ("This image format does not support checks"); the module's own walks the table.
            Assert.Equal(63, ExternalTool.Run("qemu-img", "check", "-f", "vpc", path).ExitCode);
            KvmStorage.Core.Images.Check.ImageCheckResult ours = KvmStorage.Core.Images.Check.ImageChecker.Check(path);
            Assert.True(ours.Checked);
            Assert.Empty(ours.Corruptions);
            return;
        }

        ExternalTool.Result result = ExternalTool.Run("qemu-img", "check", "--output=json", "-f", format, path);
        Assert.True(result.ExitCode == 0, $"qemu-img check exited {result.ExitCode}: {result.Stdout}{result.Stderr}");
        using JsonDocument json = JsonDocument.Parse(result.Stdout);
        Assert.Equal(0, json.RootElement.GetProperty("check-errors").GetInt32());
        Assert.False(json.RootElement.TryGetProperty("corruptions", out JsonElement c) && c.GetInt32() != 0);
    }

    private static JsonElement QemuInfo(string path, string format)
    {
        using JsonDocument doc = JsonDocument.Parse(ExternalTool.RunChecked("qemu-img", "info", "-U", "--output=json", "-f", format, path));
        return doc.RootElement.Clone();
    }

    private static (int, int, int) Geometry(string vhd)
    {
        byte[] footer = File.ReadAllBytes(vhd).AsSpan()[^512..].ToArray();
        return (BinaryPrimitives.ReadUInt16BigEndian(footer.AsSpan(56)), footer[58], footer[59]);
    }

    private static bool SameContent(string rawSource, IBlockReader image)
    {
        using FileStream raw = File.OpenRead(rawSource);
        byte[] a = new byte[MiB];
        byte[] b = new byte[MiB];
        for (ulong offset = 0; offset < image.Size; offset += MiB)
        {
            int n = (int)Math.Min(MiB, image.Size - offset);
            Array.Clear(a);
            raw.Position = (long)offset;
            raw.ReadAtLeast(a.AsSpan(0, n), n, throwOnEndOfStream: false);
            image.Read(offset, b.AsSpan(0, n));
            if (!a.AsSpan(0, n).SequenceEqual(b.AsSpan(0, n)))
            {
                return false;
            }
        }

        return true;
    }
}
