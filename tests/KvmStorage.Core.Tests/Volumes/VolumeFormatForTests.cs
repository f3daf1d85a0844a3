using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Volumes;
using Xunit;

namespace KvmStorage.Core.Tests.Volumes;

/// <summary>A new volume's format follows its name unless told otherwise, and a name never contradicts its format.</summary>
public sealed class VolumeFormatForTests
{
    [Theory]
    [InlineData("kvm1.img", ImageFormat.Raw)]
    [InlineData("kvm1.IMG", ImageFormat.Raw)]
    [InlineData("d.raw", ImageFormat.Raw)]
    [InlineData("d.vmdk", ImageFormat.Vmdk)]
    [InlineData("d.qcow2", ImageFormat.Qcow2)]
    [InlineData("d.Qcow2", ImageFormat.Qcow2)]
    [InlineData("noextension", ImageFormat.Qcow2)]
    [InlineData("archive.tar", ImageFormat.Qcow2)]
    public void Without_a_format_the_extension_decides(string name, ImageFormat expected) =>
        Assert.Equal(expected, VolumeNames.FormatFor(name, null, ImageFormat.Qcow2));

    [Fact]
    public void Without_a_format_or_a_known_extension_the_fallback_is_used() =>
        Assert.Equal(ImageFormat.Raw, VolumeNames.FormatFor("disk", null, ImageFormat.Raw));

    [Theory]
    [InlineData("d.img", ImageFormat.Qcow2)]
    [InlineData("d.img", ImageFormat.Vmdk)]
    [InlineData("d.qcow2", ImageFormat.Qcow2)]
    [InlineData("d", ImageFormat.Raw)]
    [InlineData("d.iso", ImageFormat.Raw)]
    public void A_format_the_name_does_not_contradict_is_taken(string name, ImageFormat requested) =>
        Assert.Equal(requested, VolumeNames.FormatFor(name, requested, ImageFormat.Qcow2));

    [Theory]
    [InlineData("d.qcow2", ImageFormat.Raw)]
    [InlineData("d.qcow2", ImageFormat.Vmdk)]
    [InlineData("d.raw", ImageFormat.Qcow2)]
    [InlineData("d.vmdk", ImageFormat.Raw)]
    public void A_name_that_says_another_format_is_refused(string name, ImageFormat requested)
    {
        var e = Assert.Throws<KvmStorageException>(() => VolumeNames.FormatFor(name, requested, ImageFormat.Qcow2));
        Assert.Equal(VolumeErrorIds.FormatExtensionMismatch, e.ErrorId);
        Assert.Equal(ErrorKind.InvalidArgument, e.Kind);
        Assert.Contains(requested.ToQemuName(), e.Message, StringComparison.Ordinal);
    }
}
