using System.Management.Automation;
using KvmStorage.Core.Images;
using KvmStorage.Core.Access;
using KvmStorage.Core.Images.Check;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.VolumeHealth;

/// <summary>Compare-Volume: compares what a guest sees in two images, like <c>qemu-img compare</c>.</summary>
[Cmdlet(VerbsData.Compare, "Volume")]
[OutputType(typeof(ImageCompareResult))]
public sealed class CompareVolumeCommand : KvmCmdlet
{
    /// <summary>The image compared against: a volume object or a path.</summary>
    [Parameter(Mandatory = true, Position = 0)]
    [ValidateNotNull]
    public VolumeReference ReferenceVolume { get; set; } = null!;

    /// <summary>The image(s) compared with the reference: volume objects or paths, also from the pipeline.</summary>
    [Parameter(Mandatory = true, Position = 1, ValueFromPipeline = true)]
    [ValidateNotNull]
    public VolumeReference[] DifferenceVolume { get; set; } = [];

    /// <summary>Images of different sizes differ, even when the extra part reads as zeros.</summary>
    [Parameter]
    public SwitchParameter Strict { get; set; }

    /// <summary>The passphrase of encrypted images among the two (LUKS); the same for both.</summary>
    [Parameter]
    public System.Security.SecureString? Passphrase { get; set; }

    /// <summary>
    /// Read the image even while a running VM writes it (qemu-img's -U): the result describes a moment of an image
    /// that may be changing, and says so in a warning.
    /// </summary>
    [Parameter]
    public SwitchParameter ForceShare { get; set; }

    protected override void ProcessRecord()
    {
        foreach (VolumeReference difference in DifferenceVolume)
        {
            RunForItem(difference, () =>
            {
                using ImagePassphrase? passphrase = Passphrases.From(Passphrase);
                VolumeAction<ImageCompareResult> compare = Volumes.Compare(SpecOf(ReferenceVolume), SpecOf(difference), Strict, passphrase, ForceShare);
                WarnIfShared(SpecOf(ReferenceVolume));
                WarnIfShared(SpecOf(difference));
                WriteObject(RunWithProgress("Compare-Volume", $"Comparing {System.IO.Path.GetFileName(compare.Target)}", compare.Run));
            });
        }
    }
}
