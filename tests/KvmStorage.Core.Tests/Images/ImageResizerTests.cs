using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Images;

public sealed class ImageResizerTests : IDisposable
{
    private const ulong MiB = 1024 * 1024;
    private const ulong GiB = 1024 * MiB;
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [SkippableTheory]
    [InlineData(65536u, GiB, GiB + (512 * MiB))]
    [InlineData(65536u, GiB, 8UL * 1024 * GiB)]
    [InlineData(512u, 64 * MiB, 4 * GiB)]
    [InlineData(4096u, 64 * MiB, 300 * GiB)]
    [InlineData(65536u, 0UL, 10 * GiB)]
    public void Qcow2_grow_keeps_data_and_passes_check(uint clusterSize, ulong size, ulong newSize)
    {
        ExternalTool.Require("qemu-io");
        string path = temp.Combine("grow.qcow2");
        ImageCreator.Create(path, new ImageCreateOptions { ClusterSize = clusterSize, VirtualSize = size });
        if (size > 0)
        {
            ExternalTool.RunChecked("qemu-io", "-c", "write -P 0xab 0 1M", "-c", $"write -P 0xcd {size - (64 * 1024)} 64k", path);
        }

        ImageInfo info = ImageResizer.Resize(path, newSize, new ImageResizeOptions());
        Assert.Equal(newSize, info.VirtualSize);
        QemuOracle.AssertCheckClean(path);
        QemuOracle.AssertInfoMatches(path);
        if (size > 0)
        {
            AssertPattern(path, 0xab, 0, MiB);
            AssertPattern(path, 0xcd, size - (64 * 1024), 64 * 1024);
        }

        // The grown part is writable and readable through qemu.
        ExternalTool.RunChecked("qemu-io", "-c", $"write -P 0xef {newSize - MiB} 1M", path);
        AssertPattern(path, 0xef, newSize - MiB, MiB);
        QemuOracle.AssertCheckClean(path);
    }

    [SkippableFact]
    public void Qcow2_grow_that_needs_a_bigger_refcount_table_stays_clean()
    {
        // 512-byte clusters with 64-bit refcounts: one refcount block covers 64 clusters and the table 64 blocks.
        ExternalTool.Require("qemu-io");
        string path = temp.Combine("rc.qcow2");
        ImageCreator.Create(path, new ImageCreateOptions { ClusterSize = 512, RefcountBits = 64, VirtualSize = MiB });
        ExternalTool.RunChecked("qemu-io", "-c", "write -P 0x5a 0 512k", path);
        ImageResizer.Resize(path, 16 * GiB, new ImageResizeOptions());
        QemuOracle.AssertCheckClean(path);
        AssertPattern(path, 0x5a, 0, 512 * 1024);
        ImageInfo info = QemuOracle.AssertInfoMatches(path);
        Assert.Equal(16 * GiB, info.VirtualSize);
    }

    [SkippableFact]
    public void Qcow2_grow_of_qemu_made_images_with_snapshots_and_backing()
    {
        ExternalTool.Require("qemu-img");
        string basePath = temp.Combine("base.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", basePath, "64M");
        string path = temp.Combine("top.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", path);
        ExternalTool.RunChecked("qemu-io", "-c", "write -P 0x42 1M 1M", path);
        ExternalTool.RunChecked("qemu-img", "snapshot", "-c", "s1", path);
        ImageResizer.Resize(path, 2 * GiB, new ImageResizeOptions());
        QemuOracle.AssertCheckClean(path);
        AssertPattern(path, 0x42, MiB, MiB);
        Assert.Single(QemuOracle.AssertInfoMatches(path).Snapshots);

        var refused = Assert.Throws<KvmStorageException>(() => ImageResizer.Resize(path, 64 * MiB, new ImageResizeOptions { AllowShrink = true }));
        Assert.Equal(ImageErrorIds.ShrinkWithSnapshots, refused.ErrorId);
    }

    [SkippableFact]
    public void Qcow2_shrink_refused_with_data_beyond_and_allowed_without()
    {
        ExternalTool.Require("qemu-io");
        string path = temp.Combine("shrink.qcow2");
        ImageCreator.Create(path, new ImageCreateOptions { VirtualSize = 2 * GiB });
        ExternalTool.RunChecked("qemu-io", "-c", "write -P 0xab 0 1M", "-c", "write -P 0xcd 1536M 64k", path);

        var notAllowed = Assert.Throws<KvmStorageException>(() => ImageResizer.Resize(path, GiB, new ImageResizeOptions()));
        Assert.Equal(ImageErrorIds.ShrinkNotAllowed, notAllowed.ErrorId);
        var lose = Assert.Throws<KvmStorageException>(() => ImageResizer.Resize(path, GiB, new ImageResizeOptions { AllowShrink = true }));
        Assert.Equal(ImageErrorIds.ShrinkWouldLoseData, lose.ErrorId);
        Assert.Equal(2 * GiB, ImageInspector.Inspect(path).VirtualSize);

        ImageInfo info = ImageResizer.Resize(path, (1536 * MiB) + (64 * 1024), new ImageResizeOptions { AllowShrink = true });
        Assert.Equal((1536 * MiB) + (64 * 1024), info.VirtualSize);
        QemuOracle.AssertCheckClean(path);
        QemuOracle.AssertInfoMatches(path);
        AssertPattern(path, 0xab, 0, MiB);
        AssertPattern(path, 0xcd, 1536 * MiB, 64 * 1024);
    }

    [SkippableTheory]
    [InlineData(Preallocation.Off)]
    [InlineData(Preallocation.Falloc)]
    [InlineData(Preallocation.Full)]
    public void Raw_grow_and_shrink(Preallocation mode)
    {
        ExternalTool.Require("qemu-io");
        string path = temp.Combine("disk.raw");
        ImageCreator.Create(path, new ImageCreateOptions { Format = ImageFormat.Raw, VirtualSize = 8 * MiB });
        ExternalTool.RunChecked("qemu-io", "-f", "raw", "-c", "write -P 0x77 0 1M", path);
        ImageInfo grown = ImageResizer.Resize(path, 24 * MiB, new ImageResizeOptions { Preallocation = mode });
        Assert.Equal(24 * MiB, grown.VirtualSize);
        if (mode != Preallocation.Off)
        {
            Assert.True(grown.ActualSize >= 16 * MiB, "the grown part is allocated");
        }

        QemuOracle.AssertInfoMatches(path);
        Assert.Equal(ImageErrorIds.ShrinkNotAllowed, Assert.Throws<KvmStorageException>(() => ImageResizer.Resize(path, 4 * MiB, new ImageResizeOptions())).ErrorId);
        Assert.Equal(4 * MiB, ImageResizer.Resize(path, 4 * MiB, new ImageResizeOptions { AllowShrink = true }).VirtualSize);
        AssertPattern(path, 0x77, 0, MiB, "raw");
    }

    [Fact]
    public void Dirty_and_corrupt_images_are_not_resized()
    {
        foreach ((byte bit, string id) in new[] { ((byte)1, ImageErrorIds.ImageDirty), ((byte)2, ImageErrorIds.ImageCorrupt) })
        {
            string path = temp.Combine($"flag{bit}.qcow2");
            ImageCreator.Create(path, new ImageCreateOptions { VirtualSize = MiB });
            using (var stream = new FileStream(path, FileMode.Open, FileAccess.Write))
            {
                stream.Position = 79;
                stream.WriteByte(bit);
            }

            var error = Assert.Throws<KvmStorageException>(() => ImageResizer.Resize(path, 2 * MiB, new ImageResizeOptions()));
            Assert.Equal(id, error.ErrorId);
        }
    }

    private static void AssertPattern(string path, byte pattern, ulong offset, ulong length, string format = "qcow2")
    {
        ExternalTool.Result result = ExternalTool.Run("qemu-io", "-f", format, "-r", "-c", $"read -P 0x{pattern:x2} {offset} {length}", path);
        Assert.True(result.ExitCode == 0 && !result.Stdout.Contains("Pattern verification failed", StringComparison.Ordinal), result.Stdout + result.Stderr);
    }
}
