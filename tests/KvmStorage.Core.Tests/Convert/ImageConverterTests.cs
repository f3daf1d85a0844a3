using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Convert;
using KvmStorage.Core.IO;
using KvmStorage.Core.Tests.Images;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Convert;

/// <summary>Conversions checked against qemu-img: every output passes <c>check</c> and <c>compare</c> says it equals its source.</summary>
public sealed class ImageConverterTests : IDisposable
{
    private const ulong MiB = 1024 * 1024;
    private const ulong SampleSize = 32 * MiB;

    // Random data, written zeros, compressible text, small unaligned writes and holes.
    private const ulong SampleData = (3 * MiB) + 65536 + (4 * MiB) + 4096 + 65536;

    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    /// <summary>A raw image: random, written zeros, compressible text, an unaligned 512-byte write, the last cluster, holes between.</summary>
    internal static string MakeSampleRaw(string path)
    {
        var random = new Random(1234);
        using (var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write))
        {
            stream.SetLength((long)SampleSize);
            byte[] noise = new byte[3 * MiB];
            random.NextBytes(noise);
            stream.Position = 0;
            stream.Write(noise);
            stream.Position = (long)(8 * MiB);
            stream.Write(new byte[2 * MiB]);
            stream.Position = (long)((12 * MiB) + 4096 + 100);
            stream.Write(noise.AsSpan(0, 512));
            byte[] text = new byte[4 * MiB];
            for (int i = 0; i < text.Length; i++)
            {
                text[i] = (byte)"the quick brown fox jumps over the lazy dog\n"[(i * 7 / 3) % 44];
            }

            stream.Position = (long)(20 * MiB);
            stream.Write(text);
            stream.Position = (long)(SampleSize - 65536);
            stream.Write(noise.AsSpan(0, 65536));
        }

        return path;
    }

    public static TheoryData<string, string> Targets() => new()
    {
        { "raw", "raw" },
        { "qcow2", "qcow2" },
        { "qcow2-v2", "qcow2" },
        { "qcow2-512", "qcow2" },
        { "qcow2-2M", "qcow2" },
        { "qcow2-zlib", "qcow2" },
        { "qcow2-zstd", "qcow2" },
        { "qcow2-zlib-v2-4k", "qcow2" },
        { "qcow2-metadata", "qcow2" },
        { "qcow2-metadata-v2", "qcow2" },
        { "qcow2-falloc", "qcow2" },
        { "qcow2-full", "qcow2" },
        { "raw-falloc", "raw" },
        { "vmdk", "vmdk" },
    };

    internal static ConvertOptions OptionsFor(string target) => target switch
    {
        "raw" => new ConvertOptions { Format = ImageFormat.Raw },
        "raw-falloc" => new ConvertOptions { Format = ImageFormat.Raw, Preallocation = Preallocation.Falloc },
        "qcow2" => new ConvertOptions(),
        "qcow2-v2" => new ConvertOptions { Compat = "0.10" },
        "qcow2-512" => new ConvertOptions { ClusterSize = 512 },
        "qcow2-2M" => new ConvertOptions { ClusterSize = 2 * 1024 * 1024 },
        "qcow2-zlib" => new ConvertOptions { Compress = true },
        "qcow2-zstd" => new ConvertOptions { Compress = true, CompressionType = CompressionType.Zstd },
        "qcow2-zlib-v2-4k" => new ConvertOptions { Compress = true, Compat = "0.10", ClusterSize = 4096 },
        "qcow2-metadata" => new ConvertOptions { Preallocation = Preallocation.Metadata },
        "qcow2-metadata-v2" => new ConvertOptions { Preallocation = Preallocation.Metadata, Compat = "0.10" },
        "qcow2-falloc" => new ConvertOptions { Preallocation = Preallocation.Falloc },
        "qcow2-full" => new ConvertOptions { Preallocation = Preallocation.Full },
        "vmdk" => new ConvertOptions { Format = ImageFormat.Vmdk },
        _ => throw new ArgumentOutOfRangeException(nameof(target)),
    };

    [SkippableTheory]
    [MemberData(nameof(Targets))]
    public void Raw_source_converts_to_an_identical_clean_image(string target, string format)
    {
        ExternalTool.Require("qemu-img");
        string source = MakeSampleRaw(temp.Combine("source.raw"));
        string output = temp.Combine("out." + format);
        using (var reader = new RawFileBlockReader(source))
        {
            ImageInfo info = ImageConverter.Convert(reader, output, OptionsFor(target));
            Assert.Equal(SampleSize, info.VirtualSize);
            Assert.True((ulong)reader.BytesRead < SampleData + (8 * MiB), $"read {reader.BytesRead} bytes: holes were read");
        }

        ConvertOracle.AssertIdentical(source, "raw", output, format);
        Assert.Empty(Directory.GetFiles(temp.Path, AtomicFile.TempPrefix + "*"));
        if (target == "raw")
        {
            // Holes and written zeros stay holes: only the non-zero 4 KiB blocks are allocated.
            ulong allocated = FileStatus.Get(output).AllocatedBytes;
            Assert.InRange(allocated, 7 * MiB, (7 * MiB) + (2 * MiB));
            Assert.Equal(SampleSize, (ulong)new FileInfo(output).Length);
        }
    }

    [SkippableFact]
    public void Qcow2_layout_matches_qemu_img_convert()
    {
        ExternalTool.Require("qemu-img");
        string source = MakeSampleRaw(temp.Combine("source.raw"));
        string ours = temp.Combine("ours.qcow2");
        string theirs = temp.Combine("theirs.qcow2");
        using (var reader = new RawFileBlockReader(source))
        {
            ImageConverter.Convert(reader, ours, new ConvertOptions());
        }

        ExternalTool.RunChecked("qemu-img", "convert", "-f", "raw", "-O", "qcow2", source, theirs);

        // Same clusters in the same places: data in guest order after the first L2 table, nothing for zeros.
        Assert.Equal(new FileInfo(theirs).Length, new FileInfo(ours).Length);
        Assert.Equal(ExternalTool.RunChecked("qemu-img", "map", "--output=json", theirs), ExternalTool.RunChecked("qemu-img", "map", "--output=json", ours));
    }

    [SkippableFact]
    public void Compressed_qcow2_packs_clusters_and_stores_incompressible_ones_plainly()
    {
        ExternalTool.Require("qemu-img");
        string source = MakeSampleRaw(temp.Combine("source.raw"));
        string output = temp.Combine("out.qcow2");
        using (var reader = new RawFileBlockReader(source))
        {
            ImageConverter.Convert(reader, output, new ConvertOptions { Compress = true });
        }

        string json = ExternalTool.RunChecked("qemu-img", "check", "--output=json", output);
        using var doc = System.Text.Json.JsonDocument.Parse(json);
        int compressed = doc.RootElement.GetProperty("compressed-clusters").GetInt32();
        int allocated = doc.RootElement.GetProperty("allocated-clusters").GetInt32();
        Assert.Equal(64 + 1, compressed); // the 4 MiB of text and the mostly zero cluster of the unaligned write
        Assert.Equal(64 + 48 + 1 + 1, allocated); // plus 3 MiB random, the unaligned write and the last cluster
        Assert.True(new FileInfo(output).Length < (long)(5 * MiB), "text clusters were not compressed");
    }

    [SkippableFact]
    public void Estimate_matches_qemu_img_measure_for_qcow2()
    {
        string source = MakeSampleRaw(temp.Combine("source.raw"));
        using var reader = new RawFileBlockReader(source);
        ulong estimate = ImageConverter.EstimateSize(reader, new ConvertOptions());
        Skip.If(ExternalTool.Find("qemu-img") is null);
        string measured = ExternalTool.RunChecked("qemu-img", "measure", "--output=json", "-f", "raw", "-O", "qcow2", source);
        using var doc = System.Text.Json.JsonDocument.Parse(measured);
        Assert.Equal(doc.RootElement.GetProperty("required").GetUInt64(), estimate);
    }

    [Fact]
    public void Cancellation_leaves_no_file()
    {
        string source = MakeSampleRaw(temp.Combine("source.raw"));
        string output = temp.Combine("out.qcow2");
        using var cts = new CancellationTokenSource();
        using var reader = new RawFileBlockReader(source);
        var progress = new SyncProgress(_ => cts.Cancel());
        Assert.ThrowsAny<OperationCanceledException>(() => ImageConverter.Convert(reader, output, new ConvertOptions { Compress = true }, progress, cts.Token));
        Assert.False(File.Exists(output));
        Assert.Equal(["source.raw"], Directory.GetFiles(temp.Path).Select(Path.GetFileName));
    }

    [Fact]
    public void Bad_requests_fail_with_typed_errors_and_write_nothing()
    {
        string source = MakeSampleRaw(temp.Combine("source.raw"));
        File.WriteAllText(temp.Combine("taken.qcow2"), "x");
        using var reader = new RawFileBlockReader(source);
        (string Path, ConvertOptions Options, string ErrorId)[] cases =
        [
            (temp.Combine("taken.qcow2"), new ConvertOptions(), ConvertErrorIds.DestinationExists),
            (temp.Combine("missing", "x.qcow2"), new ConvertOptions(), ConvertErrorIds.DestinationFolderNotFound),
            (source, new ConvertOptions { Format = ImageFormat.Raw }, ConvertErrorIds.DestinationExists),
            (temp.Combine("a.qed"), new ConvertOptions { Format = ImageFormat.Qed }, ConvertErrorIds.UnsupportedTargetFormat),
            (temp.Combine("b.raw"), new ConvertOptions { Format = ImageFormat.Raw, Compress = true }, ConvertErrorIds.InvalidConvertOptions),
            (temp.Combine("c.qcow2"), new ConvertOptions { Compress = true, Preallocation = Preallocation.Full }, ConvertErrorIds.InvalidConvertOptions),
            (temp.Combine("d.qcow2"), new ConvertOptions { ClusterSize = 3000 }, ConvertErrorIds.InvalidConvertOptions),
            (temp.Combine("e.raw"), new ConvertOptions { Format = ImageFormat.Raw, Preallocation = Preallocation.Metadata }, ConvertErrorIds.InvalidConvertOptions),
            (temp.Combine("f.qcow2"), new ConvertOptions { Compress = true, CompressionType = CompressionType.Zstd, Compat = "0.10" }, ConvertErrorIds.InvalidConvertOptions),
        ];
        foreach (var (path, options, errorId) in cases)
        {
            var e = Assert.Throws<KvmStorageException>(() => ImageConverter.Convert(reader, path, options));
            Assert.Equal(errorId, e.ErrorId);
        }

        Assert.Equal(["source.raw", "taken.qcow2"], Directory.GetFiles(temp.Path).Select(Path.GetFileName).Order());
        Assert.Equal("x", File.ReadAllText(temp.Combine("taken.qcow2")));
    }

    [Fact]
    public void Overwrite_replaces_the_destination_atomically()
    {
        string source = MakeSampleRaw(temp.Combine("source.raw"));
        string output = temp.Combine("out.qcow2");
        File.WriteAllText(output, "old");
        using var reader = new RawFileBlockReader(source);
        ImageInfo info = ImageConverter.Convert(reader, output, new ConvertOptions { Overwrite = true });
        Assert.Equal(ImageFormat.Qcow2, info.ImageFormat);
        Assert.Equal(2, Directory.GetFiles(temp.Path).Length);
    }

    private sealed class SyncProgress(Action<ImageProgress> action) : IProgress<ImageProgress>
    {
        public void Report(ImageProgress value) => action(value);
    }
}

/// <summary>qemu-img check and compare on a conversion's output.</summary>
internal static class ConvertOracle
{
    public static void AssertIdentical(string source, string sourceFormat, string output, string outputFormat)
    {
        if (outputFormat != "raw")
        {
            QemuOracle.AssertCheckClean(output);
        }

        ExternalTool.Result compare = ExternalTool.Run("qemu-img", "compare", "-f", sourceFormat, "-F", outputFormat, source, output);
        Assert.True(compare.ExitCode == 0, $"qemu-img compare {source} {output} exited {compare.ExitCode}: {compare.Stdout}{compare.Stderr}");
    }
}

/// <summary>Every source format the block layer reads (made by qemu-img convert) × output formats and options.</summary>
public sealed class ConvertSourceFormatTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    public static TheoryData<string, string, string> Matrix()
    {
        var data = new TheoryData<string, string, string>();
        (string Format, string Options)[] sources =
        [
            ("qcow2", ""), ("qcow2", "compat=0.10"), ("qcow2", "compression_type=zstd"), ("vmdk", ""),
            ("vmdk", "subformat=streamOptimized"), ("vdi", ""), ("vpc", ""), ("vhdx", ""),
        ];
        foreach ((string format, string options) in sources)
        {
            string[] targets = format == "qcow2" && options.Length == 0
                ? ["raw", "qcow2", "qcow2-v2", "qcow2-zlib", "qcow2-zstd", "qcow2-metadata", "qcow2-falloc", "vmdk"]
                : ["raw", "qcow2", "qcow2-zstd", "vmdk"];
            foreach (string target in targets)
            {
                data.Add(format, options, target);
            }
        }

        return data;
    }

    [SkippableTheory]
    [MemberData(nameof(Matrix))]
    public void Source_format_converts_to_an_identical_clean_image(string sourceFormat, string sourceOptions, string target)
    {
        ExternalTool.Require("qemu-img");
        string raw = ImageConverterTests.MakeSampleRaw(temp.Combine("sample.raw"));
        string source = temp.Combine("source." + sourceFormat);
        bool compressedSource = sourceOptions.Contains("zstd", StringComparison.Ordinal);
        List<string> args = ["convert", "-f", "raw", "-O", sourceFormat];
        if (sourceOptions.Length > 0)
        {
            args.AddRange(["-o", sourceOptions]);
        }

        if (compressedSource)
        {
            args.Add("-c");
        }

        args.AddRange([raw, source]);
        ExternalTool.RunChecked("qemu-img", [.. args]);
        ConvertOptions options = ImageConverterTests.OptionsFor(target);
        string output = temp.Combine("out." + options.Format.ToQemuName());
        using (IBlockReader reader = BlockReaders.Open(source))
        {
            ImageConverter.Convert(reader, output, options);
        }

        ConvertOracle.AssertIdentical(source, sourceFormat, output, options.Format.ToQemuName());
    }

    [SkippableFact]
    public void A_backing_chain_is_flattened()
    {
        ExternalTool.Require("qemu-img");
        string base0 = ImageConverterTests.MakeSampleRaw(temp.Combine("base.raw"));
        string mid = temp.Combine("mid.qcow2");
        string top = temp.Combine("top.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-f", "qcow2", "-b", "base.raw", "-F", "raw", mid);
        ExternalTool.RunChecked("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 1M 2M", "-c", "write -z 20M 1M", mid);
        ExternalTool.RunChecked("qemu-img", "create", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", top);
        ExternalTool.RunChecked("qemu-io", "-f", "qcow2", "-c", "write -P 0x22 2M 64k", "-c", "write -z 0 64k", top);
        string output = temp.Combine("flat.qcow2");
        using (IBlockReader reader = BlockReaders.Open(top))
        {
            ImageInfo info = ImageConverter.Convert(reader, output, new ConvertOptions());
            Assert.Null(info.BackingFile);
        }

        ConvertOracle.AssertIdentical(top, "qcow2", output, "qcow2");
    }

    [SkippableTheory]
    [InlineData("1.1")]
    [InlineData("0.10")]
    public void A_copy_that_keeps_the_backing_file_holds_only_the_overlay(string compat)
    {
        ExternalTool.Require("qemu-img");
        ImageConverterTests.MakeSampleRaw(temp.Combine("base.raw"));
        string top = temp.Combine("top.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-f", "qcow2", "-b", "base.raw", "-F", "raw", top);
        ExternalTool.RunChecked("qemu-io", "-f", "qcow2", "-c", "write -P 0x33 1M 128k", "-c", "write -z 0 64k", "-c", "write -P 0x44 30M 512", top);
        string output = temp.Combine("copy.qcow2");
        using (IBlockReader reader = BlockReaders.Open(top))
        using (IBlockReader map = TopLayerReader.Open(top))
        {
            ImageInfo info = ImageConverter.Convert(reader, output, new ConvertOptions { Compat = compat, BackingFile = "base.raw", BackingFormat = ImageFormat.Raw, AllocationSource = map });
            Assert.Equal("base.raw", info.BackingFile);
        }

        ConvertOracle.AssertIdentical(top, "qcow2", output, "qcow2");

        // Two data clusters, one 512-byte write's cluster, and the zeroed cluster: nothing of the base is copied.
        Assert.True(new FileInfo(output).Length < 1024 * 1024, $"{new FileInfo(output).Length} bytes: the backing file's data was copied");
    }
}
