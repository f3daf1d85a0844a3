using System.Buffers.Binary;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Images;

public sealed class ImageInspectorTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [SkippableTheory]
    [InlineData("compat=1.1")]
    [InlineData("compat=0.10")]
    [InlineData("extended_l2=on,cluster_size=128k")]
    [InlineData("compression_type=zstd")]
    [InlineData("lazy_refcounts=on")]
    [InlineData("refcount_bits=1,cluster_size=4k")]
    [InlineData("cluster_size=2M,preallocation=metadata")]
    [InlineData("cluster_size=512,refcount_bits=64")]
    public void Qemu_made_images_are_reported_like_qemu_img_info(string options)
    {
        ExternalTool.Require("qemu-img");
        string path = temp.Combine("q.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", "-o", options, path, "100M");
        QemuOracle.AssertInfoMatches(path);
    }

    [SkippableFact]
    public void Snapshots_are_reported_like_qemu_img_info()
    {
        ExternalTool.Require("qemu-img");
        string path = temp.Combine("snap.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", path, "64M");
        ExternalTool.RunChecked("qemu-io", "-c", "write -P 0x11 0 1M", path);
        ExternalTool.RunChecked("qemu-img", "snapshot", "-c", "first", path);
        ExternalTool.RunChecked("qemu-io", "-c", "write -P 0x22 0 64k", path);
        ExternalTool.RunChecked("qemu-img", "snapshot", "-c", "second snapshot", path);
        ImageInfo info = QemuOracle.AssertInfoMatches(path);
        Assert.Equal(2, info.Snapshots.Count);
        Assert.Equal("first", info.Snapshots[0].Name);
        Assert.Equal((ulong)64 * 1024 * 1024, info.Snapshots[1].DiskSize);

        string v2 = temp.Combine("snap2.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", v2, "64M");
        ExternalTool.RunChecked("qemu-img", "snapshot", "-c", "old", v2);
        QemuOracle.AssertInfoMatches(v2);
    }

    [SkippableTheory]
    [InlineData(true)]
    [InlineData(false)]
    public void Qemu_made_backing_chains_are_resolved(bool relative)
    {
        ExternalTool.Require("qemu-img");
        Directory.CreateDirectory(temp.Combine("lower"));
        string basePath = temp.Combine("lower", "base.raw");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "raw", basePath, "10M");
        string mid = temp.Combine("lower", "mid.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", "-b", relative ? "base.raw" : basePath, "-F", "raw", mid);
        string top = temp.Combine("top.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", "-b", relative ? "lower/mid.qcow2" : mid, "-F", "qcow2", top, "20M");
        ImageInfo info = QemuOracle.AssertInfoMatches(top);
        Assert.Equal(2, info.BackingChain.Count);
        Assert.Equal(ImageFormat.Qcow2, info.BackingChain[0].ImageFormat);
        Assert.Equal(ImageFormat.Raw, info.BackingChain[1].ImageFormat);
        Assert.Equal((ulong)10 * 1024 * 1024, info.BackingChain[1].VirtualSize);
        Assert.Equal(ImageFormat.Qcow2, ImageInspector.DetectFormat(top));
        Assert.Equal(ImageFormat.Raw, ImageInspector.DetectFormat(basePath));
    }

    [Fact]
    public void Missing_backing_file_is_a_typed_error_unless_allowed()
    {
        string basePath = temp.Combine("base.qcow2");
        ImageCreator.Create(basePath, new ImageCreateOptions { VirtualSize = 1 << 20 });
        string top = temp.Combine("top.qcow2");
        ImageCreator.Create(top, new ImageCreateOptions { BackingFile = "base.qcow2" });
        File.Delete(basePath);
        var error = Assert.Throws<KvmStorageException>(() => ImageInspector.Inspect(top));
        Assert.Equal(ErrorKind.NotFound, error.Kind);
        Assert.Equal(ImageErrorIds.BackingFileNotFound, error.ErrorId);
        ImageInfo info = ImageInspector.Inspect(top, new ImageInspectOptions { AllowMissingBacking = true });
        Assert.Equal("base.qcow2", info.BackingFile);
        Assert.Empty(info.BackingChain);
        Assert.Empty(ImageInspector.Inspect(top, new ImageInspectOptions { ResolveBackingChain = false }).BackingChain);
    }

    [Fact]
    public void Backing_loops_are_detected()
    {
        string a = temp.Combine("a.qcow2");
        string b = temp.Combine("b.qcow2");
        ImageCreator.Create(b, new ImageCreateOptions { VirtualSize = 1 << 20 });
        ImageCreator.Create(a, new ImageCreateOptions { BackingFile = "b.qcow2" });

        // Make b point back at a: a copy of an image whose backing is a replaces b.
        string x = temp.Combine("x.qcow2");
        ImageCreator.Create(x, new ImageCreateOptions { BackingFile = "a.qcow2", BackingFormat = ImageFormat.Qcow2, VirtualSize = 1 << 20 });
        File.Copy(x, b, overwrite: true);
        var error = Assert.Throws<KvmStorageException>(() => ImageInspector.Inspect(a));
        Assert.Equal(ImageErrorIds.BackingChainLoop, error.ErrorId);

        string self = temp.Combine("self.qcow2");
        ImageCreator.Create(self, new ImageCreateOptions { BackingFile = "b.qcow2", BackingFormat = ImageFormat.Qcow2, VirtualSize = 1 << 20 });
        byte[] bytes = File.ReadAllBytes(self);
        ulong nameOffset = BinaryPrimitives.ReadUInt64BigEndian(bytes.AsSpan(8));
        "s.qcow2"u8.CopyTo(bytes.AsSpan((int)nameOffset));
        File.WriteAllBytes(temp.Combine("s.qcow2"), bytes);
        Assert.Equal(ImageErrorIds.BackingChainLoop, Assert.Throws<KvmStorageException>(() => ImageInspector.Inspect(temp.Combine("s.qcow2"))).ErrorId);
    }

    [Fact]
    public void Backing_chain_depth_is_bounded()
    {
        string previous = temp.Combine("0.qcow2");
        ImageCreator.Create(previous, new ImageCreateOptions { VirtualSize = 1 << 20 });
        for (int i = 1; i <= 6; i++)
        {
            string next = temp.Combine($"{i}.qcow2");
            ImageCreator.Create(next, new ImageCreateOptions { BackingFile = Path.GetFileName(previous) });
            previous = next;
        }

        Assert.Equal(6, ImageInspector.Inspect(previous).BackingChain.Count);
        var error = Assert.Throws<KvmStorageException>(() => ImageInspector.Inspect(previous, new ImageInspectOptions { MaxChainDepth = 3 }));
        Assert.Equal(ImageErrorIds.BackingChainTooDeep, error.ErrorId);
    }

    [Fact]
    public void Missing_image_is_not_found()
    {
        var error = Assert.Throws<KvmStorageException>(() => ImageInspector.Inspect(temp.Combine("none.qcow2")));
        Assert.Equal(ErrorKind.NotFound, error.Kind);
        Assert.Equal(ImageErrorIds.ImageNotFound, error.ErrorId);
    }

    [Theory]
    [InlineData(20, 8, ImageErrorIds.InvalidClusterSize)]
    [InlineData(20, 22, ImageErrorIds.InvalidClusterSize)]
    [InlineData(36, 0x00400001, ImageErrorIds.L1TableTooLarge)]
    [InlineData(36, 0, ImageErrorIds.L1TableTooSmall)]
    [InlineData(96, 7, ImageErrorIds.InvalidRefcountOrder)]
    [InlineData(100, 96, ImageErrorIds.InvalidHeaderLength)]
    [InlineData(100, 0x20000, ImageErrorIds.InvalidHeaderLength)]
    [InlineData(56, 0x1000, ImageErrorIds.RefcountTableTooLarge)]
    [InlineData(60, 70000, ImageErrorIds.TooManySnapshots)]
    [InlineData(32, 3, ImageErrorIds.InvalidEncryptionMethod)]
    [InlineData(4, 4, ImageErrorIds.UnsupportedVersion)]
    public void Malformed_header_fields_are_typed_errors(int offset, uint value, string errorId)
    {
        string path = temp.Combine("bad.qcow2");
        ImageCreator.Create(path, new ImageCreateOptions { VirtualSize = 1 << 30 });
        byte[] bytes = File.ReadAllBytes(path);
        BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(offset), value);
        File.WriteAllBytes(path, bytes);
        var error = Assert.Throws<KvmStorageException>(() => ImageInspector.Inspect(path));
        Assert.Equal(errorId, error.ErrorId);
    }

    [Theory]
    [InlineData(40, 0x7FFF0000UL, ImageErrorIds.TableOutOfBounds)]
    [InlineData(48, 0x10001UL, ImageErrorIds.TableOutOfBounds)]
    [InlineData(24, ulong.MaxValue, ImageErrorIds.ImageTooLarge)]
    [InlineData(72, 1UL << 20, ImageErrorIds.UnsupportedFeature)]
    [InlineData(8, 0x20000UL, ImageErrorIds.InvalidBackingName)]
    public void Malformed_64_bit_fields_are_typed_errors(int offset, ulong value, string errorId)
    {
        string path = temp.Combine("bad.qcow2");
        ImageCreator.Create(path, new ImageCreateOptions { VirtualSize = 1 << 30 });
        byte[] bytes = File.ReadAllBytes(path);
        BinaryPrimitives.WriteUInt64BigEndian(bytes.AsSpan(offset), value);
        File.WriteAllBytes(path, bytes);
        var error = Assert.Throws<KvmStorageException>(() => ImageInspector.Inspect(path));
        Assert.Equal(errorId, error.ErrorId);
        if (errorId == ImageErrorIds.UnsupportedFeature)
        {
            Assert.Equal(ErrorKind.NotSupported, error.Kind);
        }
    }

    [Fact]
    public void Truncated_header_is_a_typed_error()
    {
        string path = temp.Combine("short.qcow2");
        File.WriteAllBytes(path, [0x51, 0x46, 0x49, 0xFB, 0, 0, 0, 3, 0, 0]);
        Assert.Equal(ImageErrorIds.HeaderTruncated, Assert.Throws<KvmStorageException>(() => ImageInspector.Inspect(path)).ErrorId);
    }

    [Fact]
    public void Raw_virtual_size_rounds_up_to_a_sector()
    {
        string path = temp.Combine("odd.raw");
        File.WriteAllBytes(path, new byte[1000]);
        ImageInfo info = ImageInspector.Inspect(path);
        Assert.Equal(ImageFormat.Raw, info.ImageFormat);
        Assert.Equal(1024UL, info.VirtualSize);
        Assert.Equal(1000UL, info.FileLength);
    }

    [Fact]
    public void Registry_puts_qcow2_before_raw_fallback()
    {
        Assert.Equal(ImageFormat.Raw, ImageFormatRegistry.Readers[^1].Format);
        Assert.Contains(ImageFormatRegistry.Readers, r => r.Format == ImageFormat.Qcow2);
        Assert.NotNull(ImageFormatRegistry.FindWriter(ImageFormat.Qcow2));
        Assert.NotNull(ImageFormatRegistry.FindWriter(ImageFormat.Raw));
    }
}
