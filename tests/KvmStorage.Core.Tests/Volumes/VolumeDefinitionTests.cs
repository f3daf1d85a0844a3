using KvmStorage.Core.Images;
using KvmStorage.Core.Volumes;
using KvmStorage.Core.Xml;
using Xunit;

namespace KvmStorage.Core.Tests.Volumes;

/// <summary>The typed view of libvirt's <c>&lt;volume&gt;</c> XML that the live backend reads and writes.</summary>
public sealed class VolumeDefinitionTests
{
    [Fact]
    public void Reads_what_libvirt_reports_of_a_volume()
    {
        VolumeDefinition volume = VolumeDefinition.FromXml(LibvirtXml.Parse("""
            <volume type='file'>
              <name>overlay.qcow2</name>
              <key>/var/lib/libvirt/images/overlay.qcow2</key>
              <capacity unit='bytes'>10737418240</capacity>
              <allocation unit='KiB'>196</allocation>
              <physical unit='bytes'>200704</physical>
              <target>
                <path>/var/lib/libvirt/images/overlay.qcow2</path>
                <format type='qcow2'/>
                <compat>1.1</compat>
              </target>
              <backingStore>
                <path>/var/lib/libvirt/images/base.raw</path>
                <format type='raw'/>
              </backingStore>
            </volume>
            """));

        Assert.Equal("overlay.qcow2", volume.Name);
        Assert.Equal(10UL << 30, volume.Capacity);
        Assert.Equal(196UL * 1024, volume.Allocation);
        Assert.Equal(200704UL, volume.Physical);
        Assert.Equal("/var/lib/libvirt/images/overlay.qcow2", volume.TargetPath);
        Assert.Equal("qcow2", volume.Format);
        Assert.Equal("1.1", volume.Compat);
        Assert.Equal("/var/lib/libvirt/images/base.raw", volume.BackingPath);
        Assert.Equal("raw", volume.BackingFormat);
    }

    [Fact]
    public void Missing_elements_read_as_absent()
    {
        VolumeDefinition volume = VolumeDefinition.FromXml(LibvirtXml.Parse("<volume><name>v</name><capacity>bad</capacity></volume>"));

        Assert.Equal(0UL, volume.Capacity);
        Assert.Equal(0UL, volume.Allocation);
        Assert.Null(volume.Physical);
        Assert.Null(volume.TargetPath);
        Assert.Null(volume.Format);
        Assert.Null(volume.BackingPath);
    }

    [Fact]
    public void A_new_qcow2_overlay_is_written_in_libvirts_element_order()
    {
        string xml = VolumeDefinition.Create("new.qcow2", 1UL << 30, ImageFormat.Qcow2, "1.1", "/srv/base.qcow2", ImageFormat.Qcow2).ToXml();

        Assert.Equal(
            "<volume><name>new.qcow2</name><capacity unit=\"bytes\">1073741824</capacity><target><format type=\"qcow2\" /><compat>1.1</compat></target>"
            + "<backingStore><path>/srv/base.qcow2</path><format type=\"qcow2\" /></backingStore></volume>",
            xml);
    }

    [Fact]
    public void A_raw_volume_has_no_compat_and_a_size_taken_from_the_backing_file_is_left_empty()
    {
        string xml = VolumeDefinition.Create("new.raw", null, ImageFormat.Raw, "1.1", null, null).ToXml();

        Assert.Equal("<volume><name>new.raw</name><capacity unit=\"bytes\" /><target><format type=\"raw\" /></target></volume>", xml);
    }
}
